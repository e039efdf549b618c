"""The service through an in-process loopback server: health, reflection, errors, Train."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import movie_embeddings as me
from movie_embeddings_server.serving.app import ServerConfig, bootstrap, create_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_empty_store_is_not_serving_until_the_default_model_is_trained(tmp_path: Path) -> None:
    server, running = create_server(ServerConfig(tmp_path, port=0))
    server.start()
    try:
        target = f"127.0.0.1:{running.port}"
        with grpc.insecure_channel(target) as channel, me.Client(target) as client:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == NOT_SERVING
            watch = health.Watch(
                health_pb2.HealthCheckRequest(service="movie_embeddings.v1.MovieEmbeddingService"),
                timeout=120,
            )
            assert next(watch).status == NOT_SERVING
            with pytest.raises(me.FailedPrecondition, match="no model is ready"):
                client.movie_vector(0)
            bootstrap(running)
            assert next(watch).status == SERVING
            watch.cancel()
            assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING
            (info,) = client.list_models()
            assert (info.name, info.version, info.synthetic.seed) == ("default", 1, 42)
            assert client.movie_vector(0).shape == (5,)
    finally:
        running.stop(None)


def test_reflection_lists_the_service_health_and_reflection(inproc) -> None:
    with grpc.insecure_channel(inproc.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (reply,) = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
    names = {s.name for s in reply.list_services_response.service}
    assert names == {
        "movie_embeddings.v1.MovieEmbeddingService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_train_streams_each_epoch_then_adds_a_version(inproc, inproc_client: me.Client) -> None:
    before = max(m.version for m in inproc_client.list_models("default"))
    events = list(inproc_client.train(num_watchers=200, epochs=3, seed=11, validation_fraction=0.2))
    assert [e.epoch for e in events[:-1]] == [1, 2, 3]
    assert all(isinstance(e, me.TrainProgress) and e.epochs == 3 for e in events[:-1])
    assert all(e.val_loss is not None and np.isfinite(e.val_loss) for e in events[:-1])
    info = events[-1]
    assert isinstance(info, me.ModelInfo)
    assert (info.name, info.version) == ("default", before + 1)
    assert info.metrics["loss"] == pytest.approx(events[-2].loss)
    assert info.metrics["val_loss"] == pytest.approx(events[-2].val_loss)
    assert inproc_client.get_model().version == before + 1  # no version = the newest
    served = inproc.running.store.resolve("default", before + 1)
    np.testing.assert_array_equal(inproc_client.movie_vector(4), served.embedding[4])


def test_queries_are_answered_while_a_train_runs(inproc_client: me.Client, inproc) -> None:
    started = threading.Event()
    answered: list[int] = []

    def query_loop() -> None:
        with me.Client(inproc.target) as c:
            started.wait(30)
            for _ in range(50):
                answered.append(len(c.nearest_movies(1, k=3)))

    worker = threading.Thread(target=query_loop)
    worker.start()
    for event in inproc_client.train("busy", num_watchers=2000, epochs=20, seed=2):
        started.set()
        if isinstance(event, me.TrainProgress) and event.epoch == 1:
            break  # leaving the stream early cancels the training
    worker.join(60)
    assert answered == [3] * 50
    assert "busy" not in {m.name for m in inproc_client.list_models()}


def test_second_concurrent_train_is_resource_exhausted(inproc) -> None:
    with me.Client(inproc.target) as first, me.Client(inproc.target) as second:
        # A training cancelled by an earlier test may still be stopping: wait for its slot.
        deadline = time.monotonic() + 30
        while True:
            stream = first.train("slow", num_watchers=2000, epochs=50, seed=1)
            try:
                assert isinstance(next(stream), me.TrainProgress)
                break
            except me.ResourceExhausted:
                assert time.monotonic() < deadline, "an earlier training never freed its slot"
                time.sleep(0.1)
        with pytest.raises(me.ResourceExhausted, match="already running"):
            next(second.train("other", epochs=1))
        stream.close()  # cancels the first training
