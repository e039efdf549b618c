"""A stored dataset as training rows: likes as sparse rows, watcher features, a held-out split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..config import DatasetTrainingSpec, train_rows
from ..errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from ..store.datasets import StoredDataset

# Seed streams: each random draw of a training takes [seed, stream] (training.py shuffles
# with stream 2), so the held-out watchers do not depend on the validation share.
HOLDOUT_STREAM = 0
VALIDATION_STREAM = 1
FOLD_IN_STREAM = 3


@dataclass(frozen=True)
class Likes:
    """0/1 rows kept sparse (CSR): row i likes columns[indptr[i]:indptr[i + 1]]."""

    indptr: np.ndarray  # int64 (n + 1,)
    columns: np.ndarray  # int32 (nnz,): rows of the kept catalogue
    num_columns: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def take(self, rows: np.ndarray) -> Likes:
        """The given rows, in that order."""
        lengths = np.diff(self.indptr)[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # Entry j of the result is entry j - (its new row's start) + (its old row's start).
        offsets = np.repeat(self.indptr[rows] - indptr[:-1], lengths)
        columns = self.columns[offsets + np.arange(indptr[-1])]
        return Likes(indptr, columns, self.num_columns)

    def dense(self, rows: np.ndarray) -> np.ndarray:
        """The given rows as a dense (len(rows), num_columns) float32 matrix: one batch."""
        part = self.take(rows)
        out = np.zeros((len(rows), self.num_columns), dtype=np.float32)
        out[np.repeat(np.arange(len(rows)), np.diff(part.indptr)), part.columns] = 1.0
        return out

    def counts(self) -> np.ndarray:
        """Likes per column, int64 (num_columns,)."""
        return np.bincount(self.columns, minlength=self.num_columns)

    def fold_in(self, held_share: float, seed: int) -> tuple[Likes, Likes]:
        """Each row's likes split at random into (folded in, held back): floor(held_share x n)
        of a row's n likes are held back, the same ones for the same seed."""
        lengths = np.diff(self.indptr)
        row = np.repeat(np.arange(len(self)), lengths)
        keys = np.random.default_rng([seed, FOLD_IN_STREAM]).random(len(self.columns))
        rank = np.empty(len(keys), dtype=np.int64)  # of each like in its row's shuffled order
        rank[np.lexsort((keys, row))] = np.arange(len(keys)) - self.indptr[row]
        held = rank < np.floor(lengths * held_share).astype(np.int64)[row]
        return self._where(~held, row), self._where(held, row)

    def _where(self, mask: np.ndarray, row: np.ndarray) -> Likes:
        """The entries where `mask` is true, rows kept (`row` is each entry's row)."""
        indptr = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(np.bincount(row[mask], minlength=len(self)), out=indptr[1:])
        return Likes(indptr, self.columns[mask], self.num_columns)


@dataclass(frozen=True)
class Watchers:
    """Watchers' ids and raw features (NaN = absent), aligned with their rows."""

    ids: np.ndarray  # int64 (n,): the dataset's watcher ids
    age_years: np.ndarray  # float32 (n,)
    education: np.ndarray  # float32 (n,)

    def take(self, rows: np.ndarray) -> Watchers:
        return Watchers(self.ids[rows], self.age_years[rows], self.education[rows])


@dataclass(frozen=True)
class Inputs:
    """Rows the model takes: likes (also its targets) and features (standardised age, education)."""

    likes: Likes
    features: np.ndarray  # float32 (n, 2)


@dataclass(frozen=True)
class Rows:
    """What a dataset model trains on; its columns are the kept movies, in the dataset's order."""

    movie_rows: np.ndarray  # int64 (m,): the kept movies, as rows of StoredDataset.movie_ids
    num_likes: np.ndarray  # int64 (m,): likes of each kept movie among the training watchers
    train: Likes
    train_watchers: Watchers
    heldout: Likes  # never trained on, nor in the validation split: for measuring
    heldout_watchers: Watchers
    age_mean: float  # of the training watchers' known ages; 0 when none is known
    age_std: float  # 1 when none is known (or all are equal)
    has_age: bool  # some training watcher has an age
    has_education: bool

    def features(self) -> np.ndarray:
        """(n_train, 2) float32: standardised age, education; an absent value is 0."""
        age = (self.train_watchers.age_years - self.age_mean) / self.age_std
        out = np.column_stack([age, self.train_watchers.education]).astype(np.float32)
        return np.nan_to_num(out, nan=0.0, copy=False)

    def validation_split(self, fraction: float, seed: int) -> tuple[Inputs, Inputs | None]:
        """The training watchers split at random into (fitted, validation): as Keras's
        validation_split does with synthetic data, `fraction` of them, rounded down, measure
        val_loss; None without a split."""
        inputs = Inputs(self.train, self.features())
        if not fraction:
            return inputs, None
        n = len(self.train)
        fitted, validation = _split(n, n - train_rows(n, fraction), seed, VALIDATION_STREAM)
        if not (len(fitted) and len(validation)):
            raise InvalidArgument(
                "training.validation_fraction",
                f"{fraction:g} of the {n} training watchers leaves no watcher on one side of "
                "the split",
            )
        return (
            Inputs(self.train.take(fitted), inputs.features[fitted]),
            Inputs(self.train.take(validation), inputs.features[validation]),
        )


def _row_sums(mask: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """True entries of `mask` (one per stored rating) in each CSR row."""
    before = np.zeros(len(mask) + 1, dtype=np.int64)
    np.cumsum(mask, out=before[1:])
    return before[indptr[1:]] - before[indptr[:-1]]


def _check_left(count: int, what: str, spec: DatasetTrainingSpec) -> None:
    if count == 0:
        raise FailedPrecondition(
            f"dataset {spec.dataset.name!r} v{spec.dataset.version} leaves no {what} to train "
            f"on (a like is a rating >= {spec.like_threshold:g}; min_likes_per_watcher "
            f"{spec.min_likes_per_watcher}, min_likes_per_movie {spec.min_likes_per_movie}, "
            f"holdout_fraction {spec.holdout_fraction:g})"
        )


def _split(n: int, held: int, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows 0..n-1 split at random into (kept, `held` held out), each part ascending; the same
    seed and stream give the same split."""
    order = np.random.default_rng([seed, stream]).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def prepare(dataset: StoredDataset, spec: DatasetTrainingSpec) -> Rows:
    """Likes are ratings >= like_threshold. Watchers with fewer than min_likes_per_watcher
    likes are dropped, then movies with fewer than min_likes_per_movie likes among the kept
    watchers (once: a kept watcher may then have fewer likes than the minimum); then a share
    holdout_fraction of the kept watchers, drawn with the seed, is held out. Only sparse
    arrays are built (a few bytes per rating), never a watchers x movies matrix."""
    assert spec.seed is not None
    ratings = dataset.ratings
    liked = ratings.values >= spec.like_threshold
    watcher_kept = _row_sums(liked, ratings.indptr) >= spec.min_likes_per_watcher
    _check_left(int(watcher_kept.sum()), "watcher", spec)
    liked &= np.repeat(watcher_kept, np.diff(ratings.indptr))
    movie_kept = (
        np.bincount(ratings.movie_rows[liked], minlength=len(dataset.movie_ids))
        >= spec.min_likes_per_movie
    )
    _check_left(int(movie_kept.sum()), "movie", spec)
    liked &= movie_kept[ratings.movie_rows]
    column_of = (np.cumsum(movie_kept) - 1).astype(np.int32)
    indptr = np.zeros(len(ratings.indptr), dtype=np.int64)
    np.cumsum(_row_sums(liked, ratings.indptr), out=indptr[1:])
    # Every watcher's row, empty for the dropped ones; the splits take the kept ones.
    likes = Likes(indptr, column_of[ratings.movie_rows[liked]], int(movie_kept.sum()))
    watchers = Watchers(ratings.watcher_ids, dataset.age_years, dataset.education)
    kept = np.flatnonzero(watcher_kept)
    held = int(len(kept) * spec.holdout_fraction)
    train, heldout = (kept[part] for part in _split(len(kept), held, spec.seed, HOLDOUT_STREAM))
    train_watchers = watchers.take(train)
    ages = train_watchers.age_years[np.isfinite(train_watchers.age_years)]
    age_mean, age_std = age_stats(ages) if ages.size else (0.0, 1.0)
    train_likes = likes.take(train)
    return Rows(
        movie_rows=np.flatnonzero(movie_kept),
        num_likes=train_likes.counts(),
        train=train_likes,
        train_watchers=train_watchers,
        heldout=likes.take(heldout),
        heldout_watchers=watchers.take(heldout),
        age_mean=age_mean,
        age_std=age_std,
        has_age=bool(ages.size),
        has_education=bool(np.isfinite(train_watchers.education).any()),
    )


def age_stats(age_years: np.ndarray) -> tuple[float, float]:
    """Mean and (population) std of the training ages; std 1 when all ages are equal."""
    std = float(age_years.std())
    return float(age_years.mean()), std if std > 0 else 1.0
