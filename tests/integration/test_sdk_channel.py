"""What the SDK's channel does on the wire, seen by a real gRPC server on loopback that
answers like the service but fails on demand: retries of reads, none of Train, deadlines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

import movie_embeddings as me
from movie_embeddings.v1 import movie_embeddings_pb2 as pb

SERVICE = "movie_embeddings.v1.MovieEmbeddingService"


@dataclass
class Flaky:
    """Fails the first `failures` calls of each method with UNAVAILABLE, then answers."""

    failures: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    deadlines: list[float | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _attempt(self, method: str, context: grpc.ServicerContext) -> None:
        with self.lock:
            n = self.attempts[method] = self.attempts.get(method, 0) + 1
            self.deadlines.append(context.time_remaining())
        if n <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"attempt {n}: not yet")

    def get_movie_vector(
        self, request: pb.GetMovieVectorRequest, context
    ) -> pb.GetMovieVectorResponse:  # type: ignore[no-untyped-def]
        self._attempt("GetMovieVector", context)
        vector = [float(request.movie_id)] * 5
        return pb.GetMovieVectorResponse(movie_id=request.movie_id, vector=vector)

    def train(self, request: pb.TrainRequest, context) -> Iterator[pb.TrainResponse]:  # type: ignore[no-untyped-def]
        self._attempt("Train", context)
        yield pb.TrainResponse(progress=pb.TrainProgress(epoch=1, epochs=1, loss=0.5))


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, str]]:
    state = Flaky()
    handlers = {
        "GetMovieVector": grpc.unary_unary_rpc_method_handler(
            state.get_movie_vector,
            pb.GetMovieVectorRequest.FromString,
            pb.GetMovieVectorResponse.SerializeToString,
        ),
        "Train": grpc.unary_stream_rpc_method_handler(
            state.train, pb.TrainRequest.FromString, pb.TrainResponse.SerializeToString
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield state, f"127.0.0.1:{port}"
    server.stop(None)


def test_reads_are_retried_on_unavailable(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    state.failures = 2
    with me.Client(target) as client:
        assert client.movie_vector(7).tolist() == [7.0] * 5
    assert state.attempts["GetMovieVector"] == 3


def test_reads_give_up_after_four_attempts(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    state.failures = 10
    with me.Client(target) as client, pytest.raises(me.Unavailable, match="attempt 4"):
        client.movie_vector(7)
    assert state.attempts["GetMovieVector"] == 4


def test_train_is_never_retried(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    state.failures = 1
    with me.Client(target) as client, pytest.raises(me.Unavailable, match="attempt 1"):
        list(client.train("m", epochs=1))
    assert state.attempts["Train"] == 1


def test_async_client_retries_reads_too(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    state.failures = 2

    async def call() -> list[float]:
        async with me.AsyncClient(target) as client:
            return (await client.movie_vector(3)).tolist()

    assert asyncio.run(call()) == [3.0] * 5
    assert state.attempts["GetMovieVector"] == 3


def test_every_call_has_a_deadline_unless_told_none(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    with me.Client(target, timeout=20) as client:
        client.movie_vector(1)  # the client's default
        client.movie_vector(1, timeout=3)  # this call's
        client.movie_vector(1, timeout=None)  # none at all: distinct from "not given"
        list(client.train("m"))  # Train: no deadline unless given
    default, given, none, train = state.deadlines
    assert 15 < default <= 20.1  # (deadlines are rounded up a little on the way)
    assert 2 < given <= 3.1
    assert none is None or none > 1e6  # gRPC reports "no deadline" as None or as huge
    assert train is None or train > 1e6
