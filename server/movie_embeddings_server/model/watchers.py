"""The watchers a forward pass takes: made from a request's lists or arrays, bounds checked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgument
from .vectors import MovieVectors

MAX_AGE_YEARS = 150.0


@dataclass(frozen=True)
class Watchers:
    """Inputs of the forward pass: ratings (n, movies) float32, raw ages, education levels."""

    ratings: np.ndarray
    age_years: np.ndarray
    education: np.ndarray


def check_ratings(ratings: np.ndarray, field_of_row: Callable[[int], str]) -> None:
    """Every rating finite and in [0, 1]; the first bad row names the field."""
    if not ratings.size or (ratings.min() >= 0 and ratings.max() <= 1):  # NaN fails both
        return
    in_range = (ratings >= 0) & (ratings <= 1)
    row = int(np.flatnonzero(~in_range.all(axis=1))[0])
    raise InvalidArgument(field_of_row(row), "must be finite and in [0, 1]")


class WatcherInput(MovieVectors):
    """Watchers of these movies from a request: ratings in catalogue order or liked movie
    ids, ages and education levels, each checked against the field of the request it came
    from."""

    def make_watchers(
        self,
        ratings: list[list[float]],
        liked: list[list[int]],
        age_years: list[float],
        education: list[int],
    ) -> Watchers:
        """Watchers from per-watcher ratings (in catalogue order) or liked movie ids (exactly
        one each), bounds checked."""
        if not ratings:
            raise InvalidArgument("watchers", "must hold at least one watcher")
        matrix = np.zeros((len(ratings), self.num_movies), dtype=np.float32)
        rated = []
        for i, (row, ids, age, level) in enumerate(
            zip(ratings, liked, age_years, education, strict=True)
        ):
            self._check_watcher(i, row, ids, age, level)
            if row:
                matrix[i] = row
                rated.append(i)
            elif ids:
                matrix[i, self._liked_rows(i, ids)] = 1.0
        check_ratings(matrix[rated], lambda row: f"watchers[{rated[row]}].ratings")
        return Watchers(matrix, np.asarray(age_years, np.float32), np.asarray(education))

    def _check_watcher(
        self, i: int, ratings: Sequence[float], ids: Sequence[int], age: float, level: int
    ) -> None:
        """Bounds of watcher i, checked on Python values: cheaper than arrays for a few."""
        if not 0 <= age <= MAX_AGE_YEARS:  # False for NaN too
            raise InvalidArgument(
                f"watchers[{i}].age_years",
                f"must be finite and in [0, {MAX_AGE_YEARS:g}], got {age:g}",
            )
        if level < 0:
            raise InvalidArgument(f"watchers[{i}].education", f"must be >= 0, got {level}")
        if ratings and ids:
            raise InvalidArgument(f"watchers[{i}]", "set ratings or liked_movie_ids, not both")
        if ratings and len(ratings) != self.num_movies:
            raise InvalidArgument(
                f"watchers[{i}].ratings",
                f"must have {self.num_movies} values (one per movie), got {len(ratings)}",
            )

    def _liked_rows(self, i: int, ids: Sequence[int]) -> list[int]:
        """The rows of watcher i's liked movie ids, ascending, each once (liked twice: once)."""
        if self.catalogue.is_identity:
            rows = sorted(set(ids[:]))  # a slice of a protobuf field: one call, not an iteration
            if not rows or (rows[0] >= 0 and rows[-1] < self.num_movies):
                return rows
        field = f"watchers[{i}].liked_movie_ids"
        return np.unique(self.catalogue.rows(field, np.asarray(ids, dtype=np.int64))).tolist()

    @staticmethod
    def _check_watchers(watchers: Watchers, where: str = "watchers[{row}].{field}") -> None:
        """Bounds of every watcher's values; `where` names a field of the request."""
        check_ratings(watchers.ratings, lambda row: where.format(row=row, field="ratings"))
        ages = watchers.age_years
        bad = np.flatnonzero(~((ages >= 0) & (ages <= MAX_AGE_YEARS)))
        if bad.size:
            raise InvalidArgument(
                where.format(row=bad[0], field="age_years"),
                f"must be finite and in [0, {MAX_AGE_YEARS:g}], got {ages[bad[0]]:g}",
            )
        bad = np.flatnonzero(watchers.education < 0)
        if bad.size:
            raise InvalidArgument(
                where.format(row=bad[0], field="education"),
                f"must be >= 0, got {watchers.education[bad[0]]}",
            )

    def dense_watchers(
        self, ratings: np.ndarray, age_years: np.ndarray, education: np.ndarray
    ) -> Watchers:
        """Watchers from flat row-major ratings and per-watcher arrays, bounds checked."""
        n = len(age_years)
        if n == 0:
            raise InvalidArgument("batch.age_years", "must hold one age per watcher (>= 1)")
        if len(education) != n:
            raise InvalidArgument(
                "batch.education", f"must have {n} values (one per watcher), got {len(education)}"
            )
        if ratings.size != n * self.num_movies:
            raise InvalidArgument(
                "batch.ratings",
                f"must hold {n} x {self.num_movies} float32 values, got {ratings.size}",
            )
        watchers = Watchers(ratings.reshape(n, self.num_movies), age_years, education)
        self._check_watchers(watchers, "batch.{field}[{row}]")
        return watchers
