"""Every non-OK status code maps to one class of the SDK's exception tree."""

from __future__ import annotations

import socket

import grpc
import pytest

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
