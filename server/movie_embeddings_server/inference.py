"""A loaded model version answering queries from numpy arrays: vectors, neighbours, forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import search
from .errors import InvalidArgument, NotFound

MAX_AGE_YEARS = 150.0
WEIGHT_NAMES = ("embedding", "hidden_kernel", "hidden_bias", "output_kernel", "output_bias")


@dataclass(frozen=True)
class Watchers:
    """Inputs of the forward pass: ratings (n, movies) float32, raw ages, education levels."""

    ratings: np.ndarray
    age_years: np.ndarray
    education: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows; matches Keras's sigmoid to float32 precision.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


class ServedModel:
    """One model version: its weights, age statistics and metadata, prepared once at load."""

    def __init__(
        self, name: str, version: int, weights: dict[str, np.ndarray], meta: dict[str, Any]
    ):
        self.name = name
        self.version = version
        self.meta = meta
        self.embedding = np.ascontiguousarray(weights["embedding"], dtype=np.float32)
        self.unit = search.unit_rows(self.embedding)
        self.hidden_kernel = weights["hidden_kernel"].astype(np.float32)
        self.hidden_bias = weights["hidden_bias"].astype(np.float32)
        self.output_kernel = weights["output_kernel"].astype(np.float32)
        self.output_bias = weights["output_bias"].astype(np.float32)
        self.age_mean = float(meta["age_mean"])
        self.age_std = float(meta["age_std"])

    @property
    def num_movies(self) -> int:
        return int(self.embedding.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.embedding.shape[1])

    def check_movie_ids(self, field: str, ids: np.ndarray) -> None:
        """Negative ids are malformed; ids past the catalogue name movies that do not exist."""
        if ids.size == 0:
            return
        if ids.min() < 0:
            raise InvalidArgument(field, f"movie ids must be >= 0, got {int(ids.min())}")
        if ids.max() >= self.num_movies:
            raise NotFound(
                f"{field}: movie {int(ids.max())} is not in model {self.name} v{self.version} "
                f"(movie ids are 0..{self.num_movies - 1})"
            )

    def vectors(self, ids: np.ndarray, field: str = "movie_ids") -> np.ndarray:
        """Rows `ids` of the embedding kernel (all rows when `ids` is empty)."""
        if ids.size == 0:
            return self.embedding
        self.check_movie_ids(field, ids)
        return self.embedding[ids]

    def nearest(
        self,
        *,
        movie_id: int | None,
        vector: np.ndarray | None,
        k: int,
        metric: str,
        exclude: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and scores of the k nearest movies, best first; the query movie is excluded."""
        if k < 0:
            raise InvalidArgument("k", f"must be >= 0, got {k}")
        self.check_movie_ids("exclude_movie_ids", exclude)
        if (movie_id is None) == (vector is None):
            raise InvalidArgument("query", "set exactly one of movie_id or vector")
        if movie_id is not None:
            self.check_movie_ids("movie_id", np.array([movie_id]))
            query = self.embedding[movie_id]
            exclude = np.append(exclude, movie_id)
        else:
            assert vector is not None
            query = self._check_vector(vector, metric)
        row_scores = search.scores(self.embedding, self.unit, query, metric)
        ids = search.top_k(row_scores, k, exclude)
        return ids, row_scores[ids]

    def _check_vector(self, vector: np.ndarray, metric: str) -> np.ndarray:
        if vector.shape != (self.embedding_dim,):
            raise InvalidArgument(
                "vector.values", f"must have {self.embedding_dim} values, got {vector.size}"
            )
        if not np.isfinite(vector).all():
            raise InvalidArgument("vector.values", "must be finite (no NaN or Inf)")
        if metric == "cosine" and not np.any(vector):
            raise InvalidArgument("vector.values", "must not be all zero with the cosine metric")
        return vector.astype(np.float32)

    def forward(self, watchers: Watchers) -> np.ndarray:
        """The Keras model's output, (n, movies) float32: the same layers in numpy."""
        age = (watchers.age_years.astype(np.float32) - self.age_mean) / self.age_std
        features = np.column_stack([age, watchers.education.astype(np.float32)])
        embedded = watchers.ratings @ self.embedding
        merged = np.concatenate([features, embedded], axis=1, dtype=np.float32)
        hidden = np.maximum(merged @ self.hidden_kernel + self.hidden_bias, 0.0)
        return _sigmoid(hidden @ self.output_kernel + self.output_bias)

    def make_watchers(
        self,
        ratings: list[list[float]],
        liked: list[list[int]],
        age_years: list[float],
        education: list[int],
    ) -> Watchers:
        """Watchers from per-watcher ratings or liked ids (exactly one each), bounds checked."""
        if not ratings:
            raise InvalidArgument("watchers", "must hold at least one watcher")
        matrix = np.zeros((len(ratings), self.num_movies), dtype=np.float32)
        for i, (row, ids) in enumerate(zip(ratings, liked, strict=True)):
            if row and ids:
                raise InvalidArgument(f"watchers[{i}]", "set ratings or liked_movie_ids, not both")
            if row:
                if len(row) != self.num_movies:
                    raise InvalidArgument(
                        f"watchers[{i}].ratings",
                        f"must have {self.num_movies} values (one per movie), got {len(row)}",
                    )
                matrix[i] = row
            else:
                id_array = np.asarray(ids, dtype=np.int64)
                self.check_movie_ids(f"watchers[{i}].liked_movie_ids", id_array)
                matrix[i, id_array] = 1.0
        watchers = Watchers(
            matrix, np.asarray(age_years, np.float32), np.asarray(education, np.int64)
        )
        self._check_watchers(watchers)
        return watchers

    @staticmethod
    def _check_watchers(watchers: Watchers) -> None:
        ratings = watchers.ratings
        if not np.isfinite(ratings).all() or ratings.min() < 0 or ratings.max() > 1:
            row = int(np.flatnonzero(~((ratings >= 0) & (ratings <= 1)).all(axis=1))[0])
            raise InvalidArgument(f"watchers[{row}].ratings", "must be finite and in [0, 1]")
        ages = watchers.age_years
        bad = np.flatnonzero(~(np.isfinite(ages) & (ages >= 0) & (ages <= MAX_AGE_YEARS)))
        if bad.size:
            raise InvalidArgument(
                f"watchers[{bad[0]}].age_years",
                f"must be finite and in [0, {MAX_AGE_YEARS:g}], got {ages[bad[0]]:g}",
            )
        bad = np.flatnonzero(watchers.education < 0)
        if bad.size:
            raise InvalidArgument(
                f"watchers[{bad[0]}].education", f"must be >= 0, got {watchers.education[bad[0]]}"
            )

    def reconstruct(self, watchers: Watchers, top_k: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities per watcher, and its top_k likeliest movies not liked (rating < 0.5)."""
        if top_k < 0:
            raise InvalidArgument("top_k", f"must be >= 0, got {top_k}")
        probabilities = self.forward(watchers)
        recommendations = []
        if top_k:
            for row, liked in zip(probabilities, watchers.ratings >= 0.5, strict=True):
                recommendations.append(search.top_k(row, top_k, np.flatnonzero(liked)))
        return probabilities, recommendations
