"""Held-out quality of dataset models: figures stored with every version and reproducible from
it, held-out watchers never trained or validated on, the dataset defaults beating popularity
on data with latent tastes, the figures served after a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc
from movie_embeddings_server import config
from movie_embeddings_server.errors import Cancelled
from movie_embeddings_server.model.catalogue import Catalogue
from movie_embeddings_server.model.inference import ServedModel, Watchers
from movie_embeddings_server.serving.app import ServerConfig, create_server
from movie_embeddings_server.store.datasets import DatasetBuilder, DatasetStore, StoredDataset
from movie_embeddings_server.store.models import Store
from movie_embeddings_server.training import calibration, ranking, rows, worker
from movie_embeddings_server.training import keras_model as training

GROUPS = 6
FIGURES = {
    "recall_at_20",
    "recall_at_50",
    "ndcg_at_100",
    "popularity_recall_at_20",
    "popularity_recall_at_50",
    "popularity_ndcg_at_100",
    "coverage_at_20",
    "neighbour_genre_overlap",
    "random_genre_overlap",
}
# The dataset defaults but for the sizes and epochs, so that a training takes seconds.
SMALL = {"embedding_dim": 16, "hidden_units": 64, "epochs": 40}


def tastes(
    name: str, num_watchers: int = 400, num_movies: int = 240, per_watcher: int = 30, seed: int = 0
) -> StoredDataset:
    """Watchers of GROUPS latent tastes choosing movies by popularity (Zipf-like) times 6 for
    their own group's (movie m is in group m % GROUPS, its genre "G<group>"); they give
    their own group's movies 4-5 stars and others 1-4, so a like is mostly of their taste.
    Watcher w also likes movie `num_movies + w` (its signature, no genre), which nobody else
    rates."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, GROUPS, num_watchers)
    popularity = 1.0 / (rng.permutation(num_movies) + 10.0)
    weights = popularity * np.where(np.arange(num_movies) % GROUPS == group[:, None], 6.0, 1.0)
    keys = np.log(weights) + rng.gumbel(size=weights.shape)  # Gumbel top-k: without replacement
    movies = np.argsort(-keys, axis=1)[:, :per_watcher]
    own = movies % GROUPS == group[:, None]
    stars = np.where(
        own, rng.choice([4.0, 5.0], movies.shape), rng.choice([1.0, 2.0, 3.0, 4.0], movies.shape)
    )
    signature = num_movies + np.arange(num_watchers)
    builder = DatasetBuilder(name, "latent tastes", max_ratings=10**9)
    builder.add_ratings(
        0,
        np.repeat(np.arange(num_watchers) + 1, per_watcher + 1),
        np.column_stack([movies, signature]).ravel() + 1,
        np.column_stack([stars, np.full(num_watchers, 5.0)]).ravel(),
    )
    ids = np.arange(num_movies + num_watchers)
    genres = [f"G{m % GROUPS}" if m < num_movies else "" for m in ids]
    builder.add_movies(1, ids + 1, [f"Movie {m}" for m in ids], genres)
    return builder.build()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    DatasetStore(root).save(tastes("tastes"))
    return root


def _source(**given: Any) -> config.DatasetTrainingSpec:
    return config.resolve_dataset_training(
        {"dataset": {"name": "tastes", "version": 1}, "holdout_fraction": 0.2, **given}
    )


@pytest.fixture(scope="module")
def staged(data_dir: Path) -> Path:
    """A version trained with the dataset defaults but SMALL's sizes and epochs."""
    return worker.run_dataset(
        Store(data_dir),
        DatasetStore(data_dir),
        "tastes-model",
        _source(seed=4),
        config.resolve_training(SMALL, source="dataset"),
        lambda _: None,
        training.StopSignal(),
    )


def _meta(staged: Path) -> dict[str, Any]:
    return json.loads((staged / "metadata.json").read_text())


def test_the_dataset_defaults_beat_popularity_on_latent_tastes(staged: Path) -> None:
    meta = _meta(staged)
    defaults = config.wire_training(config.resolve_training({}, source="dataset"))
    assert {k: v for k, v in meta["training"].items() if k not in SMALL} == {
        k: v for k, v in defaults.items() if k not in SMALL
    }
    m = meta["metrics"]
    assert FIGURES | {"val_ndcg_at_100", "evaluate_seconds"} <= set(m)
    assert all(0 <= m[f] <= 1 for f in FIGURES)
    assert m["recall_at_20"] > 1.3 * m["popularity_recall_at_20"], m
    assert m["ndcg_at_100"] > 1.3 * m["popularity_ndcg_at_100"], m
    # Genres are the taste groups: neighbours share them far more often than random pairs
    # (a movie shares its genre with 39 of the 639 others: signatures have none).
    assert m["random_genre_overlap"] == pytest.approx(39 / 639)
    assert m["neighbour_genre_overlap"] > 2 * m["random_genre_overlap"], m
    print(m)


def _reloaded(staged: Path) -> tuple[ServedModel, rows.Likes, rows.Watchers]:
    """What a benchmark does: the stored weights and catalogue, the held-out watchers."""
    with np.load(staged / "weights.npz") as npz:
        weights = dict(npz)
    catalogue = Catalogue.load(staged, len(weights["embedding"]))
    with np.load(staged / worker.HELDOUT) as held:
        likes = rows.Likes(held["indptr"], held["columns"], len(catalogue))
        watchers = rows.Watchers(held["watcher_ids"], held["age_years"], held["education"])
    return ServedModel("again", 1, weights, _meta(staged), catalogue), likes, watchers


def test_the_figures_come_again_from_the_version_alone(staged: Path) -> None:
    meta = _meta(staged)
    served, likes, watchers = _reloaded(staged)
    again = ranking.evaluate(served, likes, watchers, meta["dataset"]["seed"])
    assert again == {f: meta["metrics"][f] for f in FIGURES}
    other_seed = ranking.evaluate(served, likes, watchers, meta["dataset"]["seed"] + 1)
    assert other_seed["recall_at_20"] != again["recall_at_20"]  # the fold-in is the seed's


def test_a_stopped_evaluation_is_cancelled(staged: Path) -> None:
    asked: list[bool] = []

    def stopped() -> bool:
        asked.append(True)
        return True

    with pytest.raises(Cancelled):
        ranking.evaluate(*_reloaded(staged), seed=1, stopped=stopped)
    assert asked == [True]  # before the first chunk of watchers


def _signature_watchers(likes: rows.Likes, num_movies: int) -> set[int]:
    """The watchers (numbered from 0) whose signature movie is among these likes."""
    return {int(c) - num_movies for c in likes.columns if c >= num_movies}


def test_held_out_watchers_are_neither_trained_nor_validated_on(data_dir: Path) -> None:
    num_movies = 240  # the catalogue's rows from here on are signatures, one per watcher
    dataset = DatasetStore(data_dir).load("tastes", 1)
    prepared = rows.prepare(dataset, _source(seed=9, min_likes_per_watcher=1))
    fitted, validation = prepared.validation_split(0.1, 9)  # as early stopping would
    assert validation is not None
    held = _signature_watchers(prepared.heldout, num_movies)
    trained = _signature_watchers(fitted.likes, num_movies)
    validated = _signature_watchers(validation.likes, num_movies)
    assert len(held) == 80 and len(validated) == 32 and len(trained) == 288
    assert held | trained | validated == set(range(400))
    assert not held & trained and not held & validated and not trained & validated
    # The catalogue's like counts (popularity) come from the training watchers alone.
    assert prepared.num_likes[[num_movies + w for w in held]].sum() == 0


def test_the_figures_are_served_and_survive_a_restart(data_dir: Path) -> None:
    def get_or_train(request: pb.TrainRequest | None) -> pb.ModelInfo:
        """Train (request given) or get model `served` v1, on a server that is then stopped."""
        server, running = create_server(ServerConfig(data_dir, port=0))
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = pb_grpc.MovieEmbeddingServiceStub(channel)
                if request:
                    return list(stub.Train(request, timeout=120))[-1].model
                ref = pb.ModelRef(name="served", version=1)
                return stub.GetModel(pb.GetModelRequest(model=ref), timeout=30).model
        finally:
            running.stop(None)

    trained = get_or_train(
        pb.TrainRequest(
            model_name="served",
            dataset=pb.DatasetTraining(dataset=pb.DatasetRef(name="tastes"), seed=2),
            training=pb.TrainingConfig(epochs=2, embedding_dim=8, hidden_units=16),
        )
    )
    assert trained.ref.version == 1
    assert set(trained.metrics) >= FIGURES
    assert dict(get_or_train(None).metrics) == dict(trained.metrics)


def test_the_calibration_comes_from_the_stored_version(staged: Path) -> None:
    deciles = calibration.of_version(staged)
    served, likes, watchers = _reloaded(staged)
    folded, held = likes.fold_in(ranking.HELD_SHARE, _meta(staged)["dataset"]["seed"])
    every = np.arange(len(likes))
    inputs = folded.dense(every)
    ages = np.where(np.isfinite(watchers.age_years), watchers.age_years, served.age_mean)
    probabilities = served.forward(Watchers(inputs, ages, np.nan_to_num(watchers.education)))
    cells = inputs == 0  # the movies not folded in
    assert len(deciles) == calibration.DECILES
    assert sum(d.cells for d in deciles) == np.count_nonzero(cells)
    assert max(d.cells for d in deciles) - min(d.cells for d in deciles) <= 1
    weighted = [
        sum(getattr(d, f) * d.cells for d in deciles) / cells.sum()
        for f in ("predicted", "observed")
    ]
    assert weighted[0] == pytest.approx(probabilities[cells].mean(dtype=np.float64), rel=1e-6)
    assert weighted[1] == pytest.approx(held.dense(every)[cells].mean(dtype=np.float64), rel=1e-9)
    predicted = [d.predicted for d in deciles]
    assert predicted == sorted(predicted)
    observed = [d.observed for d in deciles]
    assert observed[-1] > 5 * np.mean(observed[:5]), observed  # the ranking separates likes
    print([(round(d.predicted, 4), round(d.observed, 4)) for d in deciles])
