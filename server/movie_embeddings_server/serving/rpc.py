"""The wrapper every RPC handler runs in: domain errors to status codes (the one table on the
server), `server-id` trailing metadata, the log line and metrics of each call."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from .. import errors
from .metrics import Metrics

log = logging.getLogger(__name__)

# Set (to anything but ""), each successful answer's trailing metadata also carries
# `handler-cpu-us`: the CPU time its handler thread spent in our code (wrapper included), read
# by benchmarks/serve_bench.py. Read once at import, so that unset it costs nothing per call.
HANDLER_CPU_ENV = "MOVIE_EMBEDDINGS_HANDLER_CPU"
HANDLER_CPU = bool(os.environ.get(HANDLER_CPU_ENV))

# Domain error -> status code: the only place this mapping lives on the server.
STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
}


def status_of(exc: Exception) -> grpc.StatusCode:
    """The status code of a domain error (an instance of one of STATUS_OF's classes)."""
    return next(code for cls, code in STATUS_OF.items() if isinstance(exc, cls))


class Served(Protocol):
    """What the wrapper reads off a servicer."""

    access_log: bool
    metrics: Metrics | None
    trailing_metadata: tuple[tuple[str, str], ...]


def abort(context: grpc.ServicerContext, exc: Exception, code: grpc.StatusCode) -> None:
    status = status_pb2.Status(code=code.value[0], message=str(exc))
    if isinstance(exc, errors.InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=exc.description
        )
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status.details.append(detail)
    context.abort_with_status(rpc_status.to_status(status))


def _code(exc: BaseException) -> grpc.StatusCode:
    """The status code a call ends with when `exc` leaves its handler."""
    if isinstance(exc, tuple(STATUS_OF)):
        return status_of(exc)  # type: ignore[arg-type]
    if isinstance(exc, GeneratorExit):  # a stream whose caller went away
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


def _fail(
    context: grpc.ServicerContext, name: str, exc: BaseException, code: grpc.StatusCode
) -> None:
    """End the call for `exc`, whose `_code` is `code`: domain errors with their status codes
    (the abort raises), anything else INTERNAL (never UNKNOWN, never a traceback to the
    client); a stream whose caller went away (GeneratorExit) has nobody to answer."""
    if isinstance(exc, GeneratorExit):
        return
    if code == grpc.StatusCode.INTERNAL:
        log.exception("%s failed", name)  # the traceback stays in the server's log
        context.abort(code, f"{name}: internal error (see the server log)")
    abort(context, exc, code)  # type: ignore[arg-type]


def _record(servicer: Served, name: str, code: grpc.StatusCode, started: float) -> None:
    """The call's log line (every failed call; with --access-log every call, ~10 us each)
    and metrics."""
    seconds = time.perf_counter() - started
    if servicer.access_log or code != grpc.StatusCode.OK:
        log.info("%s %s %.2f ms", name, code.name, seconds * 1000)
    if servicer.metrics:
        servicer.metrics.call(name, code.name, seconds)


@contextlib.contextmanager
def _rpc(servicer: Served, name: str, context: grpc.ServicerContext) -> Iterator[None]:
    """One streaming call: failures as `_fail` ends them, the answer's trailing metadata
    naming the server (`server-id`: which replica answered), `_record`."""
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    context.set_trailing_metadata(servicer.trailing_metadata)
    try:
        yield
    except (Exception, GeneratorExit) as exc:
        code = _code(exc)
        _fail(context, name, exc, code)
        raise
    finally:
        _record(servicer, name, code, started)


def handler(fn: Callable) -> Callable:
    """Run each call of an RPC method as `_rpc` does; a unary one without a context manager,
    whose few microseconds count against a ~40 us handler."""
    name = fn.__name__

    @functools.wraps(fn)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        context.set_trailing_metadata(self.trailing_metadata)
        try:
            return fn(self, request, context)
        except Exception as exc:
            code = _code(exc)
            _fail(context, name, exc, code)
            raise
        finally:
            if self.access_log or self.metrics or code != grpc.StatusCode.OK:
                _record(self, name, code, started)

    @functools.wraps(fn)
    def timed(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        started = time.thread_time()
        answer = unary(self, request, context)
        used = f"{(time.thread_time() - started) * 1e6:.1f}"
        context.set_trailing_metadata((*self.trailing_metadata, ("handler-cpu-us", used)))
        return answer

    @functools.wraps(fn)
    def streaming(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with _rpc(self, name, context):
            yield from fn(self, request, context)

    if inspect.isgeneratorfunction(fn):
        return streaming
    return timed if HANDLER_CPU else unary
