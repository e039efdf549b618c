"""The handler wrapper on a real grpcio server: trailers, status codes, the CPU figure."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from movie_embeddings_server import errors, rpc


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

    method = grpc.unary_unary_rpc_method_handler(Servicer().Echo)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", {"E": method})])
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
