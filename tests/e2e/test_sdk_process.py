"""Every RPC through the SDK against a real `movie-embeddings serve` process, each test run
once with `Client` and once with `AsyncClient`."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import ServerProcess

import movie_embeddings as me

NUM_MOVIES = 80
METRICS = ["cosine", "dot", "euclidean"]
SCORE_TOLERANCE = 1e-5
TIE = 1e-6  # scores this close are a float32 tie: either order is right


def reference_scores(matrix: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Every movie's score against `query`, in float64 numpy; higher is nearer."""
    m, q = matrix.astype(np.float64), query.astype(np.float64)
    if metric == "cosine":
        return (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    if metric == "dot":
        return m @ q
    return -np.linalg.norm(m - q, axis=1)


def assert_same_ranking(
    got: list[me.Neighbor], scores: np.ndarray, k: int, excluded: set[int]
) -> None:
    """`got` is numpy's top k of `scores` without `excluded`: same ids, same order, same scores."""
    candidates = [m for m in range(len(scores)) if m not in excluded]
    expected = sorted(candidates, key=lambda m: (-scores[m], m))[:k]
    ids = [n.movie_id for n in got]
    assert len(ids) == min(k, len(candidates))
    assert len(set(ids)) == len(ids), ids
    assert not excluded & set(ids), ids
    for position, (mine, theirs) in enumerate(zip(ids, expected, strict=True)):
        assert mine == theirs or abs(scores[mine] - scores[theirs]) < TIE, (
            f"position {position}: got movie {mine} ({scores[mine]}), "
            f"numpy ranks movie {theirs} ({scores[theirs]}) there"
        )
    for n in got:
        assert abs(n.score - scores[n.movie_id]) <= SCORE_TOLERANCE, (n, scores[n.movie_id])
    assert all(a.score >= b.score for a, b in itertools.pairwise(got)), got


class Blocking:
    """An AsyncClient driven by these synchronous tests: every call runs to completion on one
    event loop, so each test checks AsyncClient exactly as it checks Client."""

    def __init__(self, target: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._async = self._loop.run_until_complete(self._open(target))

    @staticmethod
    async def _open(target: str) -> me.AsyncClient:
        return me.AsyncClient(target)  # its channel belongs to the running loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._async, name)
        if name == "train":
            return self._train
        if not callable(attribute):
            return attribute
        return lambda *args, **kwargs: self._loop.run_until_complete(attribute(*args, **kwargs))

    def _train(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        events = self._async.train(*args, **kwargs)
        try:
            while True:
                try:
                    yield self._loop.run_until_complete(anext(events))
                except StopAsyncIteration:
                    return
        finally:
            self._loop.run_until_complete(events.aclose())  # leaving early cancels it

    def close(self) -> None:
        self._loop.run_until_complete(self._async.close())
        self._loop.close()


@pytest.fixture(scope="module", params=["Client", "AsyncClient"])
def client(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Any]:
    """Overrides conftest's: the SDK's two clients in turn."""
    if request.param == "Client":
        with me.Client(server.target) as sync:
            yield sync
        return
    blocking = Blocking(server.target)
    yield blocking
    blocking.close()


@pytest.fixture(scope="module")
def vectors(server: ServerProcess) -> np.ndarray:
    """The default model's full kernel, read once."""
    with me.Client(server.target) as client:
        ids, matrix = client.movie_vectors(model="default")
    assert ids.tolist() == list(range(NUM_MOVIES))
    return matrix


def test_train_streams_epochs_then_the_model_and_adds_versions(client: me.Client) -> None:
    name = "sdkversions"
    before = [m.version for m in client.list_models(name)]
    n = max(before, default=0) + 1
    started = datetime.now(UTC)

    events = list(client.train(name, num_watchers=200, epochs=3, seed=11))
    assert [type(e) for e in events] == [me.TrainProgress] * 3 + [me.ModelInfo]
    progress = [e for e in events if isinstance(e, me.TrainProgress)]
    assert [(p.epoch, p.epochs) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    assert all(0 < p.loss < 1 for p in progress)
    assert all(p.val_loss is None for p in progress)  # no validation split
    elapsed = [p.elapsed_seconds for p in progress]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0

    first = events[-1]
    assert isinstance(first, me.ModelInfo)
    assert first.ref == me.ModelRef(name, n)
    assert first.synthetic == me.SyntheticData(200, 80, 10, 11)
    assert (first.training.preset, first.training.epochs) == ("default", 3)
    assert (first.training.embedding_dim, first.training.hidden_units) == (5, 32)
    assert (first.num_movies, first.embedding_dim, first.state) == (80, 5, "ready")
    assert first.metrics["loss"] == pytest.approx(progress[-1].loss, rel=1e-9)
    assert first.metrics["train_seconds"] > 0
    assert "val_loss" not in first.metrics
    assert started - timedelta(seconds=5) <= first.create_time <= datetime.now(UTC)
    assert first.age_std > 0 and 15 <= first.age_mean <= 100

    second = list(client.train(name, num_watchers=150, epochs=2, seed=12))[-1]
    assert isinstance(second, me.ModelInfo)
    assert second.ref == me.ModelRef(name, n + 1)
    assert second.create_time > first.create_time

    # No version = the newest.
    assert client.get_model(name) == second
    assert client.get_model(me.ModelRef(name, n)) == first
    assert client.get_model(me.ModelRef(name, n + 1)) == second
    assert [m.version for m in client.list_models(name)] == [*before, n, n + 1]
    _, newest = client.movie_vectors(model=name)
    _, older = client.movie_vectors(model=me.ModelRef(name, n))
    _, explicit = client.movie_vectors(model=me.ModelRef(name, n + 1))
    np.testing.assert_array_equal(newest, explicit)
    assert not np.array_equal(newest, older)
    np.testing.assert_array_equal(client.movie_vector(4, model=name), explicit[4])


def test_train_with_a_validation_split_reports_val_loss(client: me.Client) -> None:
    name = f"sdkval-{uuid.uuid4().hex[:8]}"
    events = list(client.train(name, num_watchers=200, epochs=2, seed=2, validation_fraction=0.25))
    progress = [e for e in events if isinstance(e, me.TrainProgress)]
    info = events[-1]
    assert isinstance(info, me.ModelInfo)
    assert len(progress) == 2
    assert all(p.val_loss is not None and 0 < p.val_loss < 1 for p in progress)
    assert info.training.validation_fraction == 0.25
    assert info.metrics["val_loss"] == pytest.approx(progress[-1].val_loss, rel=1e-9)


def test_movie_vector_and_movie_vectors(client: me.Client, vectors: np.ndarray) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (NUM_MOVIES, client.get_model().embedding_dim)
    assert np.isfinite(vectors).all() and vectors.any()
    ids, matrix = client.movie_vectors()
    assert ids.tolist() == list(range(NUM_MOVIES))
    np.testing.assert_array_equal(matrix, vectors)
    _, empty = client.movie_vectors([])
    np.testing.assert_array_equal(empty, vectors)
    for m in range(NUM_MOVIES):
        one = client.movie_vector(m)
        assert one.dtype == np.float32
        np.testing.assert_array_equal(one, vectors[m])
    asked = [7, 3, 7, 0, 79]
    ids, matrix = client.movie_vectors(asked)
    assert ids.tolist() == asked
    np.testing.assert_array_equal(matrix, vectors[asked])


@pytest.mark.parametrize("metric", METRICS)
def test_nearest_to_every_movie_agrees_with_numpy(
    client: me.Client, vectors: np.ndarray, metric: str
) -> None:
    for movie in range(NUM_MOVIES):
        got = client.nearest_movies(movie, k=7, metric=metric)
        assert len(got) == 7
        assert movie not in [n.movie_id for n in got]
        assert_same_ranking(got, reference_scores(vectors, vectors[movie], metric), 7, {movie})


@pytest.mark.parametrize("metric", METRICS)
def test_nearest_k_bounds_and_exclusions(
    client: me.Client, vectors: np.ndarray, metric: str
) -> None:
    scores = reference_scores(vectors, vectors[3], metric)
    # More than the candidates: all of them. k=0: the default, 10.
    everything = client.nearest_movies(3, k=1000, metric=metric)
    assert sorted(n.movie_id for n in everything) == [m for m in range(NUM_MOVIES) if m != 3]
    assert_same_ranking(everything, scores, 1000, {3})
    assert len(client.nearest_movies(3, k=0, metric=metric)) == 10
    assert len(client.nearest_movies(3, k=1, metric=metric)) == 1

    skip = {n.movie_id for n in everything[:4]} | {0, 79}
    got = client.nearest_movies(3, k=6, metric=metric, exclude=sorted(skip))
    assert_same_ranking(got, scores, 6, skip | {3})
    # Excluding all but two movies leaves exactly two.
    keep = {10, 20}
    rest = sorted(set(range(NUM_MOVIES)) - keep - {3})
    assert {n.movie_id for n in client.nearest_movies(3, k=5, metric=metric, exclude=rest)} == keep


@pytest.mark.parametrize("metric", METRICS)
def test_nearest_to_a_vector_agrees_with_numpy(
    client: me.Client, vectors: np.ndarray, metric: str
) -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        query = rng.normal(scale=0.3, size=vectors.shape[1]).astype(np.float32)
        got = client.nearest_movies(vector=query, k=8, metric=metric)
        assert_same_ranking(got, reference_scores(vectors, query, metric), 8, set())
    # A movie's own vector is a free query: that movie may (and for cosine does) come first.
    got = client.nearest_movies(vector=vectors[3], k=3, metric="cosine")
    assert got[0].score == pytest.approx(1.0, abs=1e-5)
    assert abs(reference_scores(vectors, vectors[3], "cosine")[got[0].movie_id] - 1) < 1e-6


def test_reconstruct_liked_ids_equals_ratings(client: me.Client) -> None:
    liked = [0, 1, 2, 40]
    ratings = np.zeros(NUM_MOVIES, dtype=np.float32)
    ratings[liked] = 1
    by_ids = client.reconstruct(liked, age_years=30, education=1, top_k=5)
    by_ratings = client.reconstruct(ratings=ratings, age_years=30, education=1, top_k=5)
    np.testing.assert_array_equal(by_ids.probabilities, by_ratings.probabilities)
    assert by_ids.recommendations == by_ratings.recommendations

    p = by_ids.probabilities
    assert p.dtype == np.float32 and p.shape == (NUM_MOVIES,)
    assert ((p >= 0) & (p <= 1)).all()
    recommended = [r.movie_id for r in by_ids.recommendations]
    candidates = [m for m in range(NUM_MOVIES) if m not in liked]
    assert recommended == sorted(candidates, key=lambda m: (-p[m], m))[:5]
    assert [r.probability for r in by_ids.recommendations] == [float(p[m]) for m in recommended]
    # Different inputs, different outputs: the comparison above is not vacuous.
    other = client.reconstruct([50, 51], age_years=60, education=3)
    assert not np.array_equal(other.probabilities, p)
    assert other.recommendations == ()


def test_reconstruct_many_equals_single_calls(client: me.Client) -> None:
    fractional = np.full(NUM_MOVIES, 0.2, dtype=np.float32)
    fractional[[5, 6, 7]] = 0.7  # rated >= 0.5: counts as liked
    watchers = [
        me.Watcher(30, 1, [0, 1, 2]),
        me.Watcher(18.5, 0, ratings=fractional),
        me.Watcher(70, 4),  # liked nothing
        me.Watcher(45, 2, list(range(0, NUM_MOVIES, 3))),
    ]
    many = client.reconstruct_many(watchers, top_k=4)
    assert len(many) == len(watchers)
    for watcher, batch in zip(watchers, many, strict=True):
        single = client.reconstruct(
            watcher.liked_movie_ids,
            ratings=watcher.ratings,
            age_years=watcher.age_years,
            education=watcher.education,
            top_k=4,
        )
        np.testing.assert_allclose(batch.probabilities, single.probabilities, rtol=0, atol=1e-6)
        assert [r.movie_id for r in batch.recommendations] == [
            r.movie_id for r in single.recommendations
        ]
        assert len(batch.recommendations) == 4
    assert not {5, 6, 7} & {r.movie_id for r in many[1].recommendations}


def test_list_models_and_get_model(client: me.Client) -> None:
    models = client.list_models()
    keys = [(m.name, m.version) for m in models]
    assert keys == sorted(keys)
    default = [m for m in models if m.name == "default"]
    assert default[0].ref == me.ModelRef("default", 1)
    assert default[0].synthetic == me.SyntheticData(1000, 80, 10, 42)
    assert (default[0].training.preset, default[0].training.epochs) == ("default", 24)
    assert client.list_models("default") == default
    assert client.get_model(me.ModelRef("default", 1)) == default[0]
    assert client.get_model() == client.get_model("default") == default[-1]
    assert client.list_models("nosuchmodel") == []


ERRORS: list[tuple[str, Callable[[me.Client], Any], type[me.MovieEmbeddingsError], str]] = [
    ("unknown model", lambda c: c.movie_vector(0, model="nosuchmodel"), me.NotFound, "nosuchmodel"),
    (
        "unknown version",
        lambda c: c.movie_vector(0, model=me.ModelRef("default", 999)),
        me.NotFound,
        "no version 999",
    ),
    ("unknown model info", lambda c: c.get_model("nosuchmodel"), me.NotFound, "nosuchmodel"),
    ("movie 999", lambda c: c.movie_vector(999), me.NotFound, "movie 999"),
    ("movie 999 in a batch", lambda c: c.movie_vectors([1, 999]), me.NotFound, "movie 999"),
    ("nearest to movie 999", lambda c: c.nearest_movies(999), me.NotFound, "movie 999"),
    (
        "liked movie 999",
        lambda c: c.reconstruct([999], age_years=30, education=1),
        me.NotFound,
        "movie 999",
    ),
    ("movie -1", lambda c: c.movie_vector(-1), me.InvalidArgument, "movie_id"),
    ("nearest to movie -1", lambda c: c.nearest_movies(-1), me.InvalidArgument, "movie_id"),
    ("k=-1", lambda c: c.nearest_movies(3, k=-1), me.InvalidArgument, "k: must be >= 0"),
    (
        "wrong-length vector",
        lambda c: c.nearest_movies(vector=[1.0, 2.0, 3.0]),
        me.InvalidArgument,
        "vector.values",
    ),
    (
        "wrong-length ratings",
        lambda c: c.reconstruct(ratings=[1.0, 0.0], age_years=30, education=1),
        me.InvalidArgument,
        "watchers[0].ratings",
    ),
    (
        "negative top_k",
        lambda c: c.reconstruct([1], age_years=30, education=1, top_k=-1),
        me.InvalidArgument,
        "top_k",
    ),
    ("bad model name", lambda c: c.movie_vector(0, model="../x"), me.InvalidArgument, "model.name"),
    ("bad model name to describe", lambda c: c.get_model("../x"), me.InvalidArgument, "../x"),
    (
        "negative version",
        lambda c: c.movie_vector(0, model=me.ModelRef("default", -1)),
        me.InvalidArgument,
        "model.version",
    ),
    (
        "bad model name to train",
        lambda c: list(c.train("../x", num_watchers=100, epochs=1)),
        me.InvalidArgument,
        "model_name",
    ),
    (
        "training too large",
        lambda c: list(c.train("huge", num_watchers=2_000_000_000, epochs=1)),
        me.ResourceExhausted,
        "num_watchers * num_movies",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [e[1:] for e in ERRORS],
    ids=[e[0] for e in ERRORS],
)
def test_errors_raise_the_sdk_exception(
    client: me.Client,
    call: Callable[[me.Client], Any],
    error: type[me.MovieEmbeddingsError],
    words: str,
) -> None:
    with pytest.raises(error) as caught:
        call(client)
    exc = caught.value
    assert isinstance(exc, me.MovieEmbeddingsError)
    assert exc.code is not None and me.ERROR_FOR_CODE[exc.code] is error
    assert exc.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
    assert words in str(exc)
    assert "Traceback" not in exc.details
    assert isinstance(exc.__cause__, grpc.RpcError)
    # The server keeps serving.
    assert client.movie_vector(0).shape == (5,)
    assert [m.name for m in client.list_models("huge")] == []


def test_the_default_preset_learns_meaningful_vectors(client: me.Client) -> None:
    """The server's own default model (defaults, seed 42) meets the README's targets for the
    default preset (purity >= 0.95, CE <= 1.10 x Bayes; it gives 0.988 and 1.065): a quality
    regression fails here."""
    info = client.get_model(me.ModelRef("default", 1))
    assert (info.training.preset, info.synthetic.seed) == ("default", 42)
    m = info.metrics
    assert m["neighbour_purity"] >= 0.95
    assert m["bayes_cross_entropy"] == pytest.approx(0.19851524, abs=1e-6)
    assert m["cross_entropy_ratio"] == pytest.approx(
        m["heldout_cross_entropy"] / m["bayes_cross_entropy"]
    )
    assert 1.0 < m["cross_entropy_ratio"] <= 1.10
    assert m["epochs_run"] == 24 == len(info.history)
    assert [p.epoch for p in info.history] == list(range(1, 25))
    assert m["loss"] == info.history[-1].loss
    # The purity the server reports is the one its served vectors have.
    _, matrix = client.movie_vectors(model=info.ref)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :7]
    groups = np.arange(80) % 10
    assert m["neighbour_purity"] == pytest.approx(
        np.mean(groups[nearest] == groups[:, None]), abs=0.02
    )


def test_invalid_argument_exposes_the_field_violations(client: me.Client) -> None:
    with pytest.raises(me.InvalidArgument) as caught:
        client.nearest_movies(1, k=-1)
    assert caught.value.field_violations == [("k", "must be >= 0, got -1")]
    with pytest.raises(me.InvalidArgument) as caught:
        client.reconstruct(ratings=[2.0] * NUM_MOVIES, age_years=30, education=1)
    assert caught.value.field_violations == [
        ("watchers[0].ratings", "must be finite and in [0, 1]")
    ]


def test_health(client: me.Client) -> None:
    assert client.health() == "SERVING"
    assert client.health("movie_embeddings.v1.MovieEmbeddingService") == "SERVING"
    with pytest.raises(me.NotFound):
        client.health("no.such.Service")


def test_leaving_an_async_train_early_cancels_it(server: ServerProcess) -> None:
    left, after = (f"{word}-{uuid.uuid4().hex[:8]}" for word in ("asyncleft", "asyncnext"))

    async def first_epoch_then_leave() -> list[str]:
        async with me.AsyncClient(server.target) as client:
            async for event in client.train(left, num_watchers=20_000, epochs=50):
                assert isinstance(event, me.TrainProgress)
                break
            # The slot frees once the trainer has stopped; then a Train is accepted again.
            deadline = time.monotonic() + 20
            while True:
                try:
                    async for _ in client.train(after, num_watchers=100, epochs=1):
                        pass
                    break
                except me.ResourceExhausted:
                    assert time.monotonic() < deadline, "the cancelled Train never freed its slot"
                    await asyncio.sleep(0.2)
            return [m.name for m in await client.list_models()]

    names = asyncio.run(first_epoch_then_leave())
    assert after in names and left not in names


def test_label_a_version_query_it_by_label_and_delete_versions(client: Any) -> None:
    name = f"sdklabel-{uuid.uuid4().hex[:8]}"  # new to the shared server
    for seed in (1, 2):
        list(client.train(name, num_watchers=100, epochs=1, seed=seed))
    assert client.set_model_label(name, "stable", 1) == {"stable": 1}
    stable = me.ModelRef(name, label="stable")
    assert client.get_model(stable).version == 1
    assert client.get_model(stable).labels == ("stable",)
    np.testing.assert_array_equal(
        client.movie_vector(3, model=stable), client.movie_vector(3, model=me.ModelRef(name, 1))
    )
    with pytest.raises(me.InvalidArgument) as exc:
        client.get_model(me.ModelRef(name, 2, "stable"))
    assert [field for field, _ in exc.value.field_violations] == ["model.label"]
    with pytest.raises(me.FailedPrecondition, match="labelled stable"):
        client.delete_model(name)
    assert [m.version for m in client.delete_model(name, 2)] == [2]
    assert client.set_model_label(name, "stable", 0) == {}
    assert [m.version for m in client.delete_model(me.ModelRef(name, 1))] == [1]
    with pytest.raises(me.NotFound):
        client.get_model(name)
