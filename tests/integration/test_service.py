"""The service through an in-process loopback server: health, reflection, errors, Train."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

import movie_embeddings as me
from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc
from movie_embeddings_server.app import ServerConfig, bootstrap, create_server

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


def _rpc_error(call, request) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        result = call(request)
        if not isinstance(result, pb.GetMovieVectorResponse | pb.NearestMoviesResponse):
            list(result)  # a stream fails when read
    return info.value


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("GetMovieVector", pb.GetMovieVectorRequest(movie_id=-1), "movie_id"),
        ("NearestMovies", pb.NearestMoviesRequest(movie_id=1, k=-1), "k"),
        ("NearestMovies", pb.NearestMoviesRequest(k=3), "query"),
        (
            "NearestMovies",
            pb.NearestMoviesRequest(vector=pb.Vector(values=[1, 2])),
            "vector.values",
        ),
        ("Reconstruct", pb.ReconstructRequest(), "watchers"),
        (
            "Reconstruct",
            pb.ReconstructRequest(
                watchers=[pb.Watcher(ratings=[0.5] * 80, liked_movie_ids=[1], age_years=30)]
            ),
            "watchers[0]",
        ),
        (
            "Reconstruct",
            pb.ReconstructRequest(
                watchers=[pb.Watcher(age_years=30), pb.Watcher(ratings=[2.0] * 80, age_years=30)]
            ),
            "watchers[1].ratings",
        ),
        (
            "Reconstruct",
            pb.ReconstructRequest(
                batch=pb.WatcherBatch(ratings=bytes(4 * 80), age_years=[30, 31], education=[1, 1])
            ),
            "batch.ratings",
        ),
        (
            "Reconstruct",
            pb.ReconstructRequest(
                batch=pb.WatcherBatch(ratings=bytes(4 * 80 + 2), age_years=[30], education=[1])
            ),
            "batch.ratings",
        ),
        (
            "Reconstruct",
            pb.ReconstructRequest(
                batch=pb.WatcherBatch(ratings=bytes(4 * 80), age_years=[30], education=[1, 2])
            ),
            "batch.education",
        ),
        (
            "Reconstruct",
            pb.ReconstructRequest(batch=pb.WatcherBatch(ratings=b"", age_years=[])),
            "batch.age_years",
        ),
        (
            "Reconstruct",
            pb.ReconstructRequest(
                batch=pb.WatcherBatch(
                    ratings=np.full(160, 2.0, "<f4").tobytes(), age_years=[30, 30], education=[1, 1]
                )
            ),
            "batch.ratings[0]",
        ),
        (
            "Reconstruct",
            pb.ReconstructRequest(
                watchers=[pb.Watcher(age_years=30)],
                batch=pb.WatcherBatch(ratings=bytes(4 * 80), age_years=[30], education=[1]),
            ),
            "batch",
        ),
        ("GetModel", pb.GetModelRequest(model=pb.ModelRef(name="../etc")), "model.name"),
        ("GetModel", pb.GetModelRequest(model=pb.ModelRef(version=-2)), "model.version"),
        ("Train", pb.TrainRequest(model_name="Bad Name"), "model_name"),
        (
            "Train",
            pb.TrainRequest(
                synthetic=pb.SyntheticData(num_watchers=1),
                training=pb.TrainingConfig(validation_fraction=0.5),
            ),
            "training.validation_fraction",
        ),
        ("Train", pb.TrainRequest(training=pb.TrainingConfig(epochs=-1)), "training.epochs"),
        (
            "Train",
            pb.TrainRequest(synthetic=pb.SyntheticData(num_movies=5, num_types=6)),
            "synthetic.num_types",
        ),
    ],
)
def test_malformed_input_is_invalid_argument_with_field_violation(
    inproc, method: str, request_, field: str
) -> None:
    with grpc.insecure_channel(inproc.target) as channel:
        error = _rpc_error(getattr(pb_grpc.MovieEmbeddingServiceStub(channel), method), request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}: ")
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == [field]
    assert "Traceback" not in error.details()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.movie_vector(80), "movie 80 is not in model default"),
        (lambda c: c.movie_vector(0, model="nosuch"), "model 'nosuch' not found"),
        (lambda c: c.movie_vector(0, model=me.ModelRef("default", 99)), "has no version 99"),
        (lambda c: c.movie_vectors([1, 200]), "movie 200"),
        (lambda c: c.nearest_movies(1, exclude=[500]), "movie 500"),
        (lambda c: c.reconstruct([90], age_years=30, education=1), "movie 90"),
    ],
)
def test_unknown_things_are_not_found(inproc_client: me.Client, call, message: str) -> None:
    with pytest.raises(me.NotFound, match=message) as info:
        call(inproc_client)
    assert info.value.code == grpc.StatusCode.NOT_FOUND


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
        for _ in range(300):
            stream = first.train("slow", num_watchers=2000, epochs=50, seed=1)
            try:
                assert isinstance(next(stream), me.TrainProgress)
                break
            except me.ResourceExhausted:
                time.sleep(0.1)
        with pytest.raises(me.ResourceExhausted, match="already running"):
            next(second.train("other", epochs=1))
        stream.close()  # cancels the first training
