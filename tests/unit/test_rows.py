"""A stored dataset as training rows: likes, the watcher and movie filters, the held-out split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from movie_embeddings_server import config
from movie_embeddings_server.errors import FailedPrecondition, InvalidArgument
from movie_embeddings_server.store.datasets import Ratings, StoredDataset
from movie_embeddings_server.training import rows

NAN = float("nan")


def _dataset(
    ratings: dict[int, dict[int, float]],
    movie_ids: list[int],
    ages: list[float] | None = None,
    education: list[float] | None = None,
) -> StoredDataset:
    """{watcher id: {movie id: rating}} as a StoredDataset (watchers and movies ascending)."""
    watchers = sorted(ratings)
    row_of = {m: r for r, m in enumerate(movie_ids)}
    lengths = [len(ratings[w]) for w in watchers]
    absent = [NAN] * len(watchers)
    return StoredDataset(
        name="d",
        version=1,
        info={"name": "d", "version": 1},
        movie_ids=np.array(movie_ids, np.int64),
        titles=np.array([f"Movie {m}" for m in movie_ids]),
        genres=np.array([""] * len(movie_ids)),
        ratings=Ratings(
            watcher_ids=np.array(watchers, np.int64),
            indptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            movie_rows=np.array([row_of[m] for w in watchers for m in ratings[w]], np.int32),
            values=np.array([v for w in watchers for v in ratings[w].values()], np.float32),
            timestamps=None,
        ),
        age_years=np.array(ages or absent, np.float32),
        education=np.array(education or absent, np.float32),
    )


def _spec(**given: Any) -> config.DatasetTrainingSpec:
    return config.resolve_dataset_training({"dataset": {"name": "d", "version": 1}, **given})


def _liked(likes: rows.Likes, row: int) -> set[int]:
    return set(likes.columns[likes.indptr[row] : likes.indptr[row + 1]].tolist())


MOVIES = [10, 20, 30, 40]
# Watcher 1 likes 10, 20 (4.0 is a like, 3.5 is not); 2 likes 10 only; 3 likes 10, 20, 30.
SMALL = {
    1: {10: 4.0, 20: 5.0, 30: 3.5},
    2: {10: 4.5, 40: 1.0},
    3: {30: 4.0, 10: 5.0, 20: 4.0},
}


def test_a_like_is_a_rating_at_or_above_the_threshold() -> None:
    prepared = rows.prepare(
        _dataset(SMALL, MOVIES), _spec(min_likes_per_watcher=1, holdout_fraction=0, seed=0)
    )
    assert prepared.train_watchers.ids.tolist() == [1, 2, 3]
    assert [_liked(prepared.train, i) for i in range(3)] == [{0, 1}, {0}, {0, 1, 2}]
    # Movie 40 has no like: left out of the catalogue; columns are the kept movies in order.
    assert prepared.movie_rows.tolist() == [0, 1, 2]
    assert prepared.num_likes.tolist() == [3, 2, 1]
    lower = rows.prepare(
        _dataset(SMALL, MOVIES),
        _spec(like_threshold=1.0, min_likes_per_watcher=1, holdout_fraction=0, seed=0),
    )
    assert lower.movie_rows.tolist() == [0, 1, 2, 3]
    assert lower.train.columns.size == 8  # every rating


def test_watchers_with_too_few_likes_leave_and_their_likes_do_not_count() -> None:
    prepared = rows.prepare(
        _dataset(SMALL, MOVIES),
        _spec(min_likes_per_watcher=2, min_likes_per_movie=2, holdout_fraction=0, seed=0),
    )
    assert prepared.train_watchers.ids.tolist() == [1, 3]
    # Among watchers 1 and 3: movie 10 has 2 likes, 20 has 2, 30 has 1 (left out).
    assert prepared.movie_rows.tolist() == [0, 1]
    assert [_liked(prepared.train, i) for i in range(2)] == [{0, 1}, {0, 1}]
    assert prepared.num_likes.tolist() == [2, 2]


def test_a_kept_watcher_may_keep_fewer_likes_than_the_minimum_after_the_movie_filter() -> None:
    prepared = rows.prepare(
        _dataset(SMALL, MOVIES),
        _spec(min_likes_per_watcher=1, min_likes_per_movie=3, holdout_fraction=0, seed=0),
    )
    assert prepared.movie_rows.tolist() == [0]  # only movie 10 has 3 likes
    assert [_liked(prepared.train, i) for i in range(3)] == [{0}, {0}, {0}]


def test_nothing_left_is_a_failed_precondition() -> None:
    dataset = _dataset(SMALL, MOVIES)
    with pytest.raises(FailedPrecondition, match="no watcher"):
        rows.prepare(dataset, _spec(min_likes_per_watcher=4, seed=0))
    with pytest.raises(FailedPrecondition, match="no movie"):
        rows.prepare(dataset, _spec(min_likes_per_watcher=1, min_likes_per_movie=4, seed=0))


def _many(num_watchers: int = 200, seed: int = 0) -> StoredDataset:
    rng = np.random.default_rng(seed)
    ratings = {
        w: {int(m): float(rng.integers(1, 6)) for m in rng.choice(50, 12, replace=False)}
        for w in range(num_watchers)
    }
    ages = rng.uniform(15, 70, num_watchers).tolist()
    return _dataset(ratings, list(range(50)), ages, rng.integers(0, 5, num_watchers).tolist())


def test_the_holdout_is_seeded_disjoint_and_its_share_of_the_kept_watchers() -> None:
    dataset = _many()
    first = rows.prepare(dataset, _spec(min_likes_per_watcher=2, holdout_fraction=0.25, seed=3))
    again = rows.prepare(dataset, _spec(min_likes_per_watcher=2, holdout_fraction=0.25, seed=3))
    other = rows.prepare(dataset, _spec(min_likes_per_watcher=2, holdout_fraction=0.25, seed=4))
    train, held = set(first.train_watchers.ids), set(first.heldout_watchers.ids)
    kept = len(train) + len(held)
    assert not train & held
    assert len(held) == int(kept * 0.25) > 0
    np.testing.assert_array_equal(first.heldout_watchers.ids, again.heldout_watchers.ids)
    assert set(other.heldout_watchers.ids) != held
    # The held-out watchers' likes are kept, in the same columns, and count for no movie.
    ratings = dataset.ratings
    for i, watcher in enumerate(first.heldout_watchers.ids.tolist()):
        w = watcher  # watcher ids are the rows here
        span = slice(ratings.indptr[w], ratings.indptr[w + 1])
        likes = ratings.movie_rows[span][ratings.values[span] >= 4.0]
        assert {int(first.movie_rows[c]) for c in _liked(first.heldout, i)} == set(likes.tolist())
    np.testing.assert_array_equal(first.num_likes, first.train.counts())


def test_the_validation_split_takes_training_watchers_only() -> None:
    prepared = rows.prepare(_many(), _spec(min_likes_per_watcher=2, seed=5))
    fitted, validation = prepared.validation_split(0.2, seed=5)
    assert validation is not None
    n = len(prepared.train)
    assert len(validation.likes) == n - config.train_rows(n, 0.2)
    assert len(fitted.likes) + len(validation.likes) == n
    # Every row of both parts is a training row, each once (compared as dense rows).
    whole = prepared.train.dense(np.arange(n))
    both = np.vstack(
        [
            fitted.likes.dense(np.arange(len(fitted.likes))),
            validation.likes.dense(np.arange(len(validation.likes))),
        ]
    )
    assert sorted(map(bytes, both.astype(np.uint8))) == sorted(map(bytes, whole.astype(np.uint8)))
    again, _ = prepared.validation_split(0.2, seed=5)
    np.testing.assert_array_equal(again.likes.columns, fitted.likes.columns)
    unsplit, none = prepared.validation_split(0.0, seed=5)
    assert none is None and len(unsplit.likes) == n


def test_a_validation_split_that_leaves_a_side_empty_names_the_field() -> None:
    prepared = rows.prepare(
        _dataset(SMALL, MOVIES), _spec(min_likes_per_watcher=1, holdout_fraction=0, seed=0)
    )
    with pytest.raises(InvalidArgument) as exc:
        prepared.validation_split(0.1, seed=0)  # 0.1 of 3 watchers: none
    assert exc.value.field == "training.validation_fraction"


def test_features_are_the_standardised_age_and_the_education() -> None:
    prepared = rows.prepare(
        _dataset(SMALL, MOVIES, ages=[20, NAN, 40], education=[1, 2, NAN]),
        _spec(min_likes_per_watcher=1, holdout_fraction=0, seed=0),
    )
    assert (prepared.has_age, prepared.has_education) == (True, True)
    assert (prepared.age_mean, prepared.age_std) == (30.0, 10.0)  # of the known ages
    np.testing.assert_array_equal(prepared.features(), [[-1, 1], [0, 2], [1, 0]])
    assert prepared.features().dtype == np.float32


def test_absent_features_are_zero_columns() -> None:
    prepared = rows.prepare(
        _dataset(SMALL, MOVIES), _spec(min_likes_per_watcher=1, holdout_fraction=0, seed=0)
    )
    assert (prepared.has_age, prepared.has_education) == (False, False)
    assert (prepared.age_mean, prepared.age_std) == (0.0, 1.0)
    assert not prepared.features().any()


def test_likes_take_and_dense_match_the_rows() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.random((30, 17)) < 0.3
    indptr = np.concatenate([[0], np.cumsum(matrix.sum(axis=1))]).astype(np.int64)
    likes = rows.Likes(indptr, np.nonzero(matrix)[1].astype(np.int32), 17)
    picked = rng.permutation(30)[:11]
    np.testing.assert_array_equal(likes.dense(picked), matrix[picked].astype(np.float32))
    part = likes.take(picked)
    assert len(part) == 11
    np.testing.assert_array_equal(part.dense(np.arange(11)), matrix[picked])
    np.testing.assert_array_equal(likes.counts(), matrix.sum(axis=0))
