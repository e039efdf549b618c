"""The sampled trainer: ids in equal the dense Keras model, the sampled loss estimates the full
one (exactly with the whole catalogue), training never makes a watchers x movies batch."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from movie_embeddings_server import config
from movie_embeddings_server.config import TrainSpec
from movie_embeddings_server.errors import Cancelled
from movie_embeddings_server.jobs import Epoch
from movie_embeddings_server.training import keras_model, ranking, sampled
from movie_embeddings_server.training.rows import Likes, Rows, Watchers

SPEC = TrainSpec(
    preset="default",
    embedding_dim=6,
    hidden_units=10,
    batch_size=32,
    learning_rate=0.01,
    trainer="sampled",
    negatives=50,
)


def keras_model_of(num_movies: int, spec: TrainSpec, weights: dict[str, np.ndarray]) -> Any:
    """The Keras model (keras_model.build_model) holding the sampled trainer's weights."""
    model = keras_model.build_model(num_movies, spec)
    model.get_layer("embedding").kernel.assign(weights["embedding"])
    hidden, output = model.get_layer("hidden"), model.get_layer("output")
    hidden.kernel.assign(weights["hidden_kernel"])
    hidden.bias.assign(weights["hidden_bias"])
    output.kernel.assign(weights["output_kernel"])
    output.bias.assign(weights["output_bias"])
    return model


def _likes(rng: np.random.Generator, n: int, movies: int, per_watcher: int) -> Likes:
    """n watchers, each liking `per_watcher` distinct movies, more often the popular ones."""
    popularity = 1.0 / np.arange(1, movies + 1)
    rows = [
        np.sort(rng.choice(movies, per_watcher, replace=False, p=popularity / popularity.sum()))
        for _ in range(n)
    ]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    return Likes(indptr, np.concatenate(rows).astype(np.int32), movies)


def _rows(likes: Likes, held: int = 0) -> Rows:
    n = len(likes)
    watchers = Watchers(
        np.arange(n, dtype=np.int64),
        np.full(n, np.nan, dtype=np.float32),
        np.full(n, np.nan, dtype=np.float32),
    )
    train, heldout = np.arange(n - held), np.arange(n - held, n)
    return Rows(
        movie_rows=np.arange(likes.num_columns),
        num_likes=likes.take(train).counts(),
        train=likes.take(train),
        train_watchers=watchers.take(train),
        heldout=likes.take(heldout),
        heldout_watchers=watchers.take(heldout),
        age_mean=0.0,
        age_std=1.0,
        has_age=False,
        has_education=False,
    )


@pytest.fixture(scope="module")
def model_and_data() -> tuple[sampled.SampledModel, Likes, np.ndarray]:
    rng = np.random.default_rng(7)
    movies = 300
    likes = _likes(rng, 40, movies, 12)
    features = rng.normal(size=(40, 2)).astype(np.float32)
    model = sampled.SampledModel(movies, SPEC, seed=1)
    model.set_weights(
        {
            "embedding": rng.normal(0, 0.3, (movies, 6)).astype(np.float32),
            "hidden_kernel": rng.normal(0, 0.3, (8, 10)).astype(np.float32),
            "hidden_bias": rng.normal(0, 0.1, 10).astype(np.float32),
            "output_kernel": rng.normal(0, 0.3, (10, movies)).astype(np.float32),
            "output_bias": rng.normal(-2, 0.5, movies).astype(np.float32),
        }
    )
    return model, likes, features


def test_ids_in_equal_the_dense_keras_model(model_and_data: Any) -> None:
    model, likes, features = model_and_data
    keras = keras_model_of(likes.num_columns, SPEC, model.weights())
    dense = likes.dense(np.arange(len(likes)))
    want = np.asarray(keras([dense, features], training=False))
    got = 1.0 / (1.0 + np.exp(-model.logits(likes, features)))
    np.testing.assert_allclose(got, want, atol=1e-5)


def _keras_loss(model: sampled.SampledModel, likes: Likes, features: np.ndarray) -> float:
    import keras

    net = keras_model_of(likes.num_columns, SPEC, model.weights())
    dense = likes.dense(np.arange(len(likes)))
    return float(keras.losses.BinaryCrossentropy()(dense, net([dense, features])))


def test_the_sampled_loss_is_the_full_loss_when_the_sample_is_the_catalogue(
    model_and_data: Any,
) -> None:
    model, likes, features = model_and_data
    movies = likes.num_columns
    everything = sampled.make_batch(
        likes,
        features,
        np.arange(len(likes)),
        np.ones(movies),
        0.0,
        np.random.default_rng(0),
        sample=np.arange(movies),
    )
    assert float(model.loss(everything)) == pytest.approx(
        _keras_loss(model, likes, features), abs=1e-5
    )


def test_the_sampled_loss_is_unbiased(model_and_data: Any) -> None:
    model, likes, features = model_and_data
    pi = sampled.inclusion_probabilities(likes.counts(), 40)
    rng = np.random.default_rng(3)
    draws = [
        float(model.loss(sampled.make_batch(likes, features, np.arange(len(likes)), pi, 0, rng)))
        for _ in range(400)
    ]
    error = np.std(draws) / np.sqrt(len(draws))
    assert abs(np.mean(draws) - _keras_loss(model, likes, features)) < 4 * error


def test_inclusion_probabilities_expect_the_sample_size() -> None:
    counts = np.r_[np.full(5, 100_000), np.arange(995)]
    pi = sampled.inclusion_probabilities(counts, 100)
    assert pi.sum() == pytest.approx(100)
    assert pi.max() == 1.0 and (pi[:5] == 1).all()  # the most liked: in every sample
    assert pi.min() > 0  # every movie can be drawn (the uniform share)
    assert (sampled.inclusion_probabilities(counts, 0) == 1).all()
    assert (sampled.inclusion_probabilities(counts, 5000) == 1).all()


def test_dropout_keeps_ids_at_the_rate_and_the_batch_has_no_dense_rows() -> None:
    likes = _likes(np.random.default_rng(1), 200, 5000, 50)
    pi = sampled.inclusion_probabilities(likes.counts(), 100)
    batch = sampled.make_batch(
        likes, np.zeros((200, 2), np.float32), np.arange(200), pi, 0.5, np.random.default_rng(2)
    )
    assert len(batch.in_index) == pytest.approx(0.5 * 200 * 50, rel=0.05)
    # every like once: outside the sample one by one, inside it through the sample's block
    assert len(batch.pos_index) + len(batch.sample_likes) == 200 * 50
    assert max(a.size for a in batch.arrays()) < 200 * 5000 / 10


def test_a_train_over_20000_movies_never_builds_a_dense_batch(monkeypatch: Any) -> None:
    # 200,000 likes over 20,000 movies; validation and early stopping on.
    likes = _likes(np.random.default_rng(5), 2000, 20_000, 100)
    spec = replace(
        SPEC,
        embedding_dim=8,
        hidden_units=16,
        epochs=2,
        batch_size=256,
        negatives=500,
        validation_fraction=0.1,
        early_stopping_patience=1,
        input_dropout=0.5,
    )
    dense_cells: list[int] = []
    real_dense = Likes.dense

    def dense(self: Likes, rows: np.ndarray) -> np.ndarray:
        dense_cells.append(len(rows) * self.num_columns)
        return real_dense(self, rows)

    def no_keras_batches(*_: Any, **__: Any) -> Any:
        raise AssertionError("the dense Keras pipeline was used")

    largest: list[int] = []
    real_make = sampled.make_batch

    def make_batch(*args: Any, **kwargs: Any) -> sampled.Batch:
        batch = real_make(*args, **kwargs)
        largest.append(max(a.size for a in batch.arrays()))
        return batch

    monkeypatch.setattr(Likes, "dense", dense)
    monkeypatch.setattr(keras_model, "_batches", no_keras_batches)
    monkeypatch.setattr(sampled, "make_batch", make_batch)
    seen: list[Epoch] = []
    trained = sampled.train_sampled(_rows(likes), spec, seed=1, on_epoch=seen.append)
    # The steps' inputs are ids: the largest is the batch's likes, not batch x movies.
    assert largest and max(largest) <= 256 * 100 * 2 < 256 * 20_000
    # Only the validation ranking makes dense rows, in ranking's bounded chunks.
    assert dense_cells and max(dense_cells) <= ranking.CHUNK_CELLS
    assert trained.weights["output_kernel"].shape == (16, 20_000)
    assert trained.weights["embedding"].shape == (20_000, 8)
    ends = [e for e in seen if e.step == e.steps]
    assert [e.epoch for e in ends] == list(range(1, len(trained.history) + 1))
    assert all(np.isfinite(e.val_loss) and e.loss > 0 for e in ends)
    assert trained.val_ndcg_at_100 is not None


def test_training_learns_and_keeps_the_best_epoch() -> None:
    # Two tastes: watchers like movies of their own half far more often.
    rng = np.random.default_rng(11)
    movies, n = 60, 400
    taste = rng.integers(0, 2, n)
    rows = []
    for t in taste:
        p = np.where(np.arange(movies) % 2 == t, 0.3, 0.02)
        rows.append(np.flatnonzero(rng.random(movies) < p))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    likes = Likes(indptr, np.concatenate(rows).astype(np.int32), movies)
    spec = replace(
        SPEC,
        epochs=8,
        negatives=20,
        validation_fraction=0.2,
        early_stopping_patience=3,
        learning_rate_schedule="cosine",
    )
    trained = sampled.train_sampled(_rows(likes), spec, seed=2)
    assert trained.history[-1].loss < trained.history[0].loss
    assert 1 <= trained.best_epoch <= len(trained.history)
    assert trained.val_ndcg_at_100 is not None and trained.val_ndcg_at_100 > 0.3


def test_a_stop_cancels_between_steps() -> None:
    likes = _likes(np.random.default_rng(4), 300, 500, 10)
    stop = keras_model.StopSignal()
    stop.set()
    with pytest.raises(Cancelled):
        sampled.train_sampled(_rows(likes), replace(SPEC, epochs=3), seed=1, stop=stop)


def test_the_trainer_settings_stay_off_the_wire() -> None:
    assert config.TrainSpec().trainer == "keras"  # the notebook's training
    assert config.resolve_training({"preset": "notebook"}, source="dataset").trainer == "keras"
    assert config.resolve_training({}).trainer == "keras"  # synthetic data
    wire = config.wire_training(config.resolve_training({}, source="dataset"))
    assert not set(config.LOCAL_FIELDS) & set(wire)
    assert set(wire) | set(config.LOCAL_FIELDS) == set(config.TrainSpec.__dataclass_fields__)
    with pytest.raises(config.InvalidArgument):
        config.resolve_training({"trainer": "fast"})
    with pytest.raises(config.InvalidArgument):
        config.resolve_training({"negatives": -1})


def test_the_dataset_default_fits_its_trainer_and_batch_to_the_data() -> None:
    default = config.resolve_training({}, source="dataset")
    assert (default.trainer, default.batch_size) == ("auto", 64)
    cells = config.DENSE_CELLS
    small = config.for_data(default, 489, 6298)  # ml-latest-small's fitted watchers x movies
    assert (small.trainer, small.batch_size) == ("keras", 64)
    assert config.for_data(default, cells // 100, 100).trainer == "keras"
    assert config.for_data(default, cells // 100 + 1, 100).trainer == "sampled"
    big = config.for_data(default, 131_600, 59_047)  # ML-25M's shape
    assert (big.trainer, big.batch_size) == ("sampled", 256)
    cap = default.max_steps_per_epoch
    assert config.for_data(default, 64 * cap, 59_047).batch_size == 64
    assert config.for_data(default, 64 * cap + 1, 59_047).batch_size == 128
    given = config.resolve_training({"batch_size": 64}, source="dataset")
    assert config.for_data(given, 131_600, 59_047).batch_size == 64  # the caller's, as given
    notebook = config.resolve_training({"preset": "notebook"}, source="dataset")
    assert config.for_data(notebook, 131_600, 59_047) == notebook
