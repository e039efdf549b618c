"""Every non-OK status code maps to one class of the SDK's exception tree."""

from __future__ import annotations

import socket
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

import movie_embeddings
from movie_embeddings import errors

NON_OK = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]


@pytest.mark.parametrize("code", NON_OK, ids=lambda c: c.name)
def test_every_non_ok_code_maps_to_an_sdk_error(code: grpc.StatusCode) -> None:
    cls = errors.ERROR_FOR_CODE[code]
    assert issubclass(cls, errors.MovieEmbeddingsError)
    assert cls is not errors.MovieEmbeddingsError
    assert getattr(movie_embeddings, cls.__name__) is cls  # exported by the package


def test_the_table_holds_exactly_the_non_ok_codes() -> None:
    assert set(errors.ERROR_FOR_CODE) == set(NON_OK)  # OK is not an error


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.CANCELLED, errors.Cancelled),
        (grpc.StatusCode.UNIMPLEMENTED, errors.Unimplemented),
        (grpc.StatusCode.INTERNAL, errors.ServerError),
        (grpc.StatusCode.UNKNOWN, errors.ServerError),
    ],
)
def test_the_codes_the_server_uses(code: grpc.StatusCode, cls: type) -> None:
    assert errors.ERROR_FOR_CODE[code] is cls


def test_error_keeps_code_and_details() -> None:
    exc = errors.NotFound("model 'x' not found", grpc.StatusCode.NOT_FOUND)
    assert exc.code is grpc.StatusCode.NOT_FOUND
    assert exc.details == "model 'x' not found"
    assert str(exc) == "model 'x' not found"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_failed_call_becomes_unavailable_from_the_rpc_error() -> None:
    target = f"127.0.0.1:{_closed_port()}"
    with (
        movie_embeddings.Client(target, timeout=5) as client,
        pytest.raises(movie_embeddings.Unavailable) as caught,
    ):
        client.list_models()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    assert caught.value.details


def test_from_rpc_error_on_a_real_call() -> None:
    with grpc.insecure_channel(f"127.0.0.1:{_closed_port()}") as channel:
        call = channel.unary_unary("/movie_embeddings.v1.MovieEmbeddingService/ListModels")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", timeout=5)
    converted = errors.from_rpc_error(caught.value)
    assert type(converted) is errors.Unavailable
    assert converted.code is grpc.StatusCode.UNAVAILABLE


def _rich_failure(status: status_pb2.Status, before: tuple = ()) -> grpc.RpcError:
    """The RpcError of a real call that a real server fails with `status` (a rich status),
    `before` trailing metadata ahead of its details."""
    rich = rpc_status.to_status(status)
    rich = rich._replace(trailing_metadata=before + rich.trailing_metadata)

    def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort_with_status(rich)
        raise AssertionError("abort_with_status returned")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    handler = grpc.unary_unary_rpc_method_handler(fail)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", {"F": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            channel.unary_unary("/t.T/F")(b"", timeout=10)
    finally:
        server.stop(None)
    return caught.value


def _packed(message) -> any_pb2.Any:  # type: ignore[no-untyped-def]
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def test_invalid_argument_carries_the_field_violations_of_the_rich_status() -> None:
    violations = [("movie_id", "movie ids must be >= 0, got -1"), ("k", "must be >= 0, got -2")]
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )
    more = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="x", description="y")]
    )
    other = error_details_pb2.ErrorInfo(reason="NOT_A_BAD_REQUEST")  # skipped
    status = status_pb2.Status(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
        message="movie_id: movie ids must be >= 0, got -1",
        details=[_packed(other), _packed(bad_request), _packed(more)],
    )
    converted = errors.from_rpc_error(_rich_failure(status, (("x-other", "not details"),)))
    assert type(converted) is errors.InvalidArgument
    assert converted.code is grpc.StatusCode.INVALID_ARGUMENT
    assert converted.details == "movie_id: movie ids must be >= 0, got -1"
    assert converted.field_violations == [*violations, ("x", "y")]


def test_an_rpc_error_without_code_or_details_is_a_server_error_with_its_text() -> None:
    converted = errors.from_rpc_error(grpc.RpcError("connection torn down"))
    assert type(converted) is errors.ServerError
    assert (converted.code, converted.details) == (
        grpc.StatusCode.UNKNOWN,
        "connection torn down",
    )


def test_out_of_range_without_details_is_an_invalid_argument_with_no_violations() -> None:
    status = status_pb2.Status(code=grpc.StatusCode.OUT_OF_RANGE.value[0], message="too far")
    converted = errors.from_rpc_error(_rich_failure(status))
    assert type(converted) is errors.InvalidArgument
    assert (converted.code, converted.details) == (grpc.StatusCode.OUT_OF_RANGE, "too far")
    assert converted.field_violations == []


def test_other_codes_keep_their_message_and_have_no_violations() -> None:
    status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="no model 'x'")
    converted = errors.from_rpc_error(_rich_failure(status))
    assert type(converted) is errors.NotFound
    assert (converted.code, converted.details, str(converted)) == (
        grpc.StatusCode.NOT_FOUND,
        "no model 'x'",
        "no model 'x'",
    )
    assert not hasattr(converted, "field_violations")
