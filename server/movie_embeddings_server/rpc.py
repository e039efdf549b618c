"""The wrapper every RPC handler runs in: domain errors to status codes (the one table on the
server), `server-id` trailing metadata, the log line and metrics of each call."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from . import errors
from .metrics import Metrics

log = logging.getLogger(__name__)

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


@contextlib.contextmanager
def _rpc(servicer: Served, name: str, context: grpc.ServicerContext) -> Iterator[None]:
    """One call: domain errors become their status codes, anything else INTERNAL (never
    UNKNOWN, never a traceback to the client). The answer's trailing metadata names the
    server (`server-id`: which replica answered). A log line with the code and duration
    for every failed call, and with --access-log for every call (~10 us each)."""
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    context.set_trailing_metadata(servicer.trailing_metadata)
    try:
        yield
    except tuple(STATUS_OF) as exc:
        code = status_of(exc)
        abort(context, exc, code)
    except GeneratorExit:  # a stream whose caller went away
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception:
        code = grpc.StatusCode.INTERNAL
        log.exception("%s failed", name)  # the traceback stays in the server's log
        context.abort(code, f"{name}: internal error (see the server log)")
    finally:
        seconds = time.perf_counter() - started
        if servicer.access_log or code != grpc.StatusCode.OK:
            log.info("%s %s %.2f ms", name, code.name, seconds * 1000)
        if servicer.metrics:
            servicer.metrics.call(name, code.name, seconds)


def handler(fn: Callable) -> Callable:
    """Run each call of an RPC method inside `_rpc`."""

    @functools.wraps(fn)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        with _rpc(self, fn.__name__, context):
            return fn(self, request, context)

    @functools.wraps(fn)
    def streaming(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with _rpc(self, fn.__name__, context):
            yield from fn(self, request, context)

    return streaming if inspect.isgeneratorfunction(fn) else unary
