"""The handler wrapper on a real grpcio server: trailers, status codes, the CPU figure."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from movie_embeddings_server import errors
from movie_embeddings_server.serving import rpc


@contextmanager
def _serving(cpu: bool, monkeypatch: pytest.MonkeyPatch) -> Iterator[grpc.Channel]:
    """A servicer whose one method answers, refuses or fails by the request's first byte,
    its handler built with MOVIE_EMBEDDINGS_HANDLER_CPU on or off, on 127.0.0.1."""
    monkeypatch.setattr(rpc, "HANDLER_CPU", cpu)

    class Servicer:
        access_log = False
        metrics = None
        trailing_metadata = (("server-id", "s1"),)

        @rpc.handler
        def Echo(self, request: bytes, context: Any) -> bytes:
            if request == b"refuse":
                raise errors.InvalidArgument("k", "must be >= 0")
            if request == b"fail":
                raise RuntimeError("a bug")
            return request

        @rpc.handler
        def Stream(self, request: bytes, context: Any) -> Iterator[bytes]:
            yield b"first"
            raise {
                b"cancel": errors.Cancelled("training was cancelled"),
                b"refuse": errors.InvalidArgument("k", "must be >= 0"),
                b"fail": RuntimeError("a bug"),
            }[request]

    servicer = Servicer()
    methods = {
        "E": grpc.unary_unary_rpc_method_handler(servicer.Echo),
        "S": grpc.unary_stream_rpc_method_handler(servicer.Stream),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", methods)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        server.stop(None)


@pytest.mark.parametrize("cpu", [False, True])
def test_answers_carry_the_server_id_and_the_cpu_figure_only_when_asked(
    cpu: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _serving(cpu, monkeypatch) as channel:
        answer, call = channel.unary_unary("/t.T/E").with_call(b"hi", timeout=10)
    trailers = dict(call.trailing_metadata())
    assert answer == b"hi" and trailers["server-id"] == "s1"
    assert ("handler-cpu-us" in trailers) is cpu
    if cpu:
        assert float(trailers["handler-cpu-us"]) >= 0


@pytest.mark.parametrize("cpu", [False, True])
def test_refusals_and_bugs_keep_their_codes(cpu: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    with _serving(cpu, monkeypatch) as channel:
        for request, code in ((b"refuse", "INVALID_ARGUMENT"), (b"fail", "INTERNAL")):
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary("/t.T/E")(request, timeout=10)
            assert caught.value.code().name == code
            assert "Traceback" not in (caught.value.details() or "")


def test_a_stream_ends_with_the_code_of_what_stopped_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Train cancelled on the server (SIGTERM, a stop) ends CANCELLED, not UNKNOWN."""
    with _serving(False, monkeypatch) as channel:
        for request, code in (
            (b"cancel", "CANCELLED"),
            (b"refuse", "INVALID_ARGUMENT"),
            (b"fail", "INTERNAL"),
        ):
            answers: list[bytes] = []
            with pytest.raises(grpc.RpcError) as caught:
                answers.extend(channel.unary_stream("/t.T/S")(request, timeout=10))
            assert answers == [b"first"]
            assert caught.value.code().name == code, caught.value.details()
            assert "Exception iterating" not in (caught.value.details() or "")
