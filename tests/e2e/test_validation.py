"""Every bad input, row by row, refused by a real server process with the right code, a
message naming the field and its bound, and (INVALID_ARGUMENT) a BadRequest field violation.

The session server runs with caps lowered by its flags (conftest.SERVER_FLAGS), so the rows
on Train sizes show that the flags set them.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import movie_embeddings as me
from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc

NAN, INF = float("nan"), float("inf")
OK_RATINGS = [0.5] * 80


def _watcher(**fields) -> pb.Watcher:  # type: ignore[no-untyped-def]
    return pb.Watcher(**{"age_years": 30, "education": 1, **fields})


def _batch(ratings: np.ndarray, ages: list[float], education: list[int]) -> pb.WatcherBatch:
    return pb.WatcherBatch(
        ratings=np.asarray(ratings, "<f4").tobytes(), age_years=ages, education=education
    )


def _train(**training) -> pb.TrainRequest:  # type: ignore[no-untyped-def]
    return pb.TrainRequest(model_name="x", training=pb.TrainingConfig(**training))


def _synthetic(**synthetic) -> pb.TrainRequest:  # type: ignore[no-untyped-def]
    return pb.TrainRequest(model_name="x", synthetic=pb.SyntheticData(**synthetic))


# (method, request, field, words of the bound the message must hold)
INVALID = [
    ("GetMovieVector", pb.GetMovieVectorRequest(movie_id=-1), "movie_id", ">= 0"),
    (
        "BatchGetMovieVectors",
        pb.BatchGetMovieVectorsRequest(movie_ids=[1, -3]),
        "movie_ids",
        ">= 0",
    ),
    ("NearestMovies", pb.NearestMoviesRequest(movie_id=-1), "movie_id", ">= 0"),
    ("NearestMovies", pb.NearestMoviesRequest(movie_id=1, k=-1), "k", ">= 0"),
    (
        "NearestMovies",
        pb.NearestMoviesRequest(movie_id=1, exclude_movie_ids=[-1]),
        "exclude_movie_ids",
        ">= 0",
    ),
    ("NearestMovies", pb.NearestMoviesRequest(k=3), "query", "movie_id or vector"),
    (
        "NearestMovies",
        pb.NearestMoviesRequest(vector=pb.Vector(values=[1, 2])),
        "vector.values",
        "5",
    ),
    (
        "NearestMovies",
        pb.NearestMoviesRequest(vector=pb.Vector(values=[1, NAN, 0, 0, 0])),
        "vector.values",
        "finite",
    ),
    (
        "NearestMovies",
        pb.NearestMoviesRequest(vector=pb.Vector(values=[1, 0, INF, 0, 0])),
        "vector.values",
        "finite",
    ),
    (
        "NearestMovies",
        pb.NearestMoviesRequest(vector=pb.Vector(values=[0] * 5)),
        "vector.values",
        "zero",
    ),
    ("Reconstruct", pb.ReconstructRequest(), "watchers", "at least one"),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher()], top_k=-1),
        "top_k",
        ">= 0",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher(ratings=[0.5] * 79)]),
        "watchers[0].ratings",
        "80",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher(), _watcher(ratings=[2.0] * 80)]),
        "watchers[1].ratings",
        "[0, 1]",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher(ratings=[NAN, *OK_RATINGS[1:]])]),
        "watchers[0].ratings",
        "[0, 1]",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher(ratings=OK_RATINGS, liked_movie_ids=[1])]),
        "watchers[0]",
        "not both",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher(liked_movie_ids=[3, -1])]),
        "watchers[0].liked_movie_ids",
        ">= 0",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher(age_years=NAN)]),
        "watchers[0].age_years",
        "[0, 150]",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher(age_years=151)]),
        "watchers[0].age_years",
        "[0, 150]",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher(age_years=-1)]),
        "watchers[0].age_years",
        "[0, 150]",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher(education=-1)]),
        "watchers[0].education",
        ">= 0",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(batch=_batch(np.zeros(80), [30, 31], [1, 1])),
        "batch.ratings",
        "2 x 80",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(
            batch=pb.WatcherBatch(ratings=bytes(4 * 80 + 2), age_years=[30], education=[1])
        ),
        "batch.ratings",
        "float32 values (4 bytes)",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(batch=_batch(np.zeros(80), [30], [1, 2])),
        "batch.education",
        "1",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(batch=pb.WatcherBatch()),
        "batch.age_years",
        ">= 1",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(batch=_batch(np.full(160, 2.0), [30, 30], [1, 1])),
        "batch.ratings[0]",
        "[0, 1]",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(batch=_batch(np.full(80, np.inf), [30], [1])),
        "batch.ratings[0]",
        "[0, 1]",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(batch=_batch(np.zeros(80), [INF], [1])),
        "batch.age_years[0]",
        "[0, 150]",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(batch=_batch(np.zeros(160), [30, -0.5], [1, 1])),
        "batch.age_years[1]",
        "[0, 150]",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(batch=_batch(np.zeros(80), [30], [-2])),
        "batch.education[0]",
        ">= 0",
    ),
    (
        "Reconstruct",
        pb.ReconstructRequest(watchers=[_watcher()], batch=_batch(np.zeros(80), [30], [1])),
        "batch",
        "not both",
    ),
    ("GetModel", pb.GetModelRequest(model=pb.ModelRef(name="../etc")), "model.name", "[a-z0-9]"),
    ("GetModel", pb.GetModelRequest(model=pb.ModelRef(version=-2)), "model.version", ">= 0"),
    ("ListModels", pb.ListModelsRequest(name="/etc/passwd"), "name", "[a-z0-9]"),
    ("Train", pb.TrainRequest(model_name="Bad Name"), "model_name", "[a-z0-9]"),
    ("Train", pb.TrainRequest(model_name="../../escape"), "model_name", "[a-z0-9]"),
    ("Train", pb.TrainRequest(model_name="a" * 65), "model_name", "{0,63}"),
    ("Train", _synthetic(num_watchers=-1), "synthetic.num_watchers", ">= 0"),
    ("Train", _synthetic(num_movies=5, num_types=6), "synthetic.num_types", "<= num_movies (5)"),
    ("Train", _train(epochs=-1), "training.epochs", "between 1 and 300"),
    ("Train", _train(epochs=301), "training.epochs", "between 1 and 300"),
    ("Train", _train(embedding_dim=241), "training.embedding_dim", "between 1 and 240"),
    ("Train", _train(hidden_units=1025), "training.hidden_units", "between 1 and 1024"),
    ("Train", _train(learning_rate=-0.1), "training.learning_rate", "> 0"),
    (
        "Train",
        pb.TrainRequest(
            synthetic=pb.SyntheticData(num_watchers=1),
            training=pb.TrainingConfig(validation_fraction=0.5),
        ),
        "training.validation_fraction",
        "no watcher",
    ),
]

# (method, request, words of the message)
NOT_FOUND = [
    ("GetMovieVector", pb.GetMovieVectorRequest(movie_id=80), "movie 80 is not in model default"),
    (
        "GetMovieVector",
        pb.GetMovieVectorRequest(model=pb.ModelRef(name="nosuch")),
        "model 'nosuch' not found",
    ),
    (
        "GetModel",
        pb.GetModelRequest(model=pb.ModelRef(name="default", version=99)),
        "has no version 99",
    ),
    ("BatchGetMovieVectors", pb.BatchGetMovieVectorsRequest(movie_ids=[1, 200]), "movie 200"),
    ("NearestMovies", pb.NearestMoviesRequest(movie_id=80), "movie 80"),
    ("NearestMovies", pb.NearestMoviesRequest(movie_id=1, exclude_movie_ids=[500]), "movie 500"),
    ("Reconstruct", pb.ReconstructRequest(watchers=[_watcher(liked_movie_ids=[90])]), "movie 90"),
]


LONG = 200_000  # characters of a caller's value; an error quotes ~100 and says how many


def _titles_clash(first: str, second: str) -> list[pb.ImportDatasetRequest]:
    """An import listing movie 1 with two titles."""
    return [
        pb.ImportDatasetRequest(header=pb.DatasetHeader(name="clash")),
        pb.ImportDatasetRequest(
            ratings=pb.RatingChunk(watcher_ids=[1], movie_ids=[1], ratings=[4.0])
        ),
        pb.ImportDatasetRequest(movies=pb.MovieChunk(movie_ids=[1, 1], titles=[first, second])),
    ]


# (method, request, field, how many long values the message quotes)
LONG_VALUES = [
    ("Train", pb.TrainRequest(model_name="x" * LONG), "model_name", 1),
    ("Train", _train(embedding_initializer="x" * LONG), "training.embedding_initializer", 1),
    ("GetModel", pb.GetModelRequest(model=pb.ModelRef(label="x" * LONG)), "model.label", 1),
    ("SetModelLabel", pb.SetModelLabelRequest(name="x" * LONG, label="a"), "name", 1),
    ("ListDatasets", pb.ListDatasetsRequest(name="x" * LONG), "name", 1),
    ("ImportDataset", _titles_clash("x" * LONG, "y" * LONG), "chunks[2].movies.titles[1]", 2),
]


@pytest.fixture(scope="module")
def stub(server) -> Iterator[pb_grpc.MovieEmbeddingServiceStub]:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.MovieEmbeddingServiceStub(channel)


def _error(stub: pb_grpc.MovieEmbeddingServiceStub, method: str, request) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        if isinstance(request, list):  # a client stream
            request = iter(request)
        result = getattr(stub, method)(request, timeout=30)
        if method == "Train":
            list(result)  # a stream fails when read
    assert "Traceback" not in info.value.details()
    return info.value


@pytest.mark.parametrize(("method", "request_", "field", "bound"), INVALID)
def test_malformed_input_is_invalid_argument_naming_field_and_bound(
    stub, method: str, request_, field: str, bound: str
) -> None:
    error = _error(stub, method, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith(f"{field}: "), error.details()
    assert bound in error.details()
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == [field]
    assert bound in bad_request.field_violations[0].description


@pytest.mark.parametrize(("method", "request_", "field", "quotes"), LONG_VALUES)
def test_a_long_value_is_quoted_bounded_with_its_length(
    stub, method: str, request_, field: str, quotes: int
) -> None:
    error = _error(stub, method, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()[:300]
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    violation = bad_request.field_violations[0]
    assert violation.field == field
    for text in (error.details(), violation.description):
        assert text.count(f"...' ({LONG} characters)") == quotes, text
        assert "x" * 100 + "...'" in text
        assert "x" * 101 not in text
        assert len(text) < 400 * quotes
    assert len(status.SerializeToString()) < 1000 * quotes  # was over 2 x LONG bytes


@pytest.mark.parametrize(("method", "request_", "message"), NOT_FOUND)
def test_unknown_things_are_not_found(stub, method: str, request_, message: str) -> None:
    error = _error(stub, method, request_)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert message in error.details()


def test_train_over_the_cells_cap_is_resource_exhausted(stub) -> None:
    error = _error(stub, "Train", _synthetic(num_watchers=25_001))  # x 80 > --max-cells 2,000,000
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2000080" in error.details() and "cap 2000000 (--max-cells)" in error.details()


def test_k_beyond_the_catalogue_returns_every_candidate(client: me.Client) -> None:
    assert len(client.nearest_movies(1, k=1000)) == 79
    assert len(client.nearest_movies(1, k=1000, exclude=[2, 3])) == 77
    assert len(client.nearest_movies(vector=np.ones(5), k=1000)) == 80


def test_the_sdk_refuses_both_movie_id_and_vector_before_sending(client: me.Client) -> None:
    # On the wire the two are a oneof: a message cannot carry both, so the SDK says so.
    with pytest.raises(ValueError, match="movie_id or vector"):
        client.nearest_movies(1, vector=np.ones(5))
