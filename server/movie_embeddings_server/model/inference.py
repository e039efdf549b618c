"""A loaded model version answering queries from numpy arrays: vectors, neighbours, forward pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument
from . import search
from .catalogue import Catalogue

MAX_AGE_YEARS = 150.0
# Up to this many movies, every movie's neighbours are ranked once per metric (a 1,024-movie
# catalogue: 8 MiB per metric), so a query by movie id reads a row instead of searching.
TABLE_MOVIES = 1024
# Answers kept per version for repeated by-id queries (a few hundred bytes each); the memo
# starts over once it holds this many.
MEMO_ANSWERS = 16384
WEIGHT_NAMES = ("embedding", "hidden_kernel", "hidden_bias", "output_kernel", "output_bias")


@dataclass(frozen=True)
class Watchers:
    """Inputs of the forward pass: ratings (n, movies) float32, raw ages, education levels."""

    ratings: np.ndarray
    age_years: np.ndarray
    education: np.ndarray


def _check_top_k(top_k: int) -> None:
    if top_k < 0:
        raise InvalidArgument("top_k", f"must be >= 0, got {top_k}")


def _sigmoid_of_negated(z: np.ndarray) -> np.ndarray:
    """sigmoid(-z) = 1 / (1 + exp(z)), in place: the output layer's product is the negated
    logits, so no call negates them. exp(z) past 88.7 is inf in float32 and its probability
    0, as it should be (Keras's is below 1e-38); that overflow is no error here."""
    with np.errstate(over="ignore"):
        np.exp(z, out=z)
    z += 1.0
    return np.reciprocal(z, out=z)


def _check_ratings(ratings: np.ndarray, field_of_row: Callable[[int], str]) -> None:
    """Every rating finite and in [0, 1]; the first bad row names the field."""
    if not ratings.size or (ratings.min() >= 0 and ratings.max() <= 1):  # NaN fails both
        return
    in_range = (ratings >= 0) & (ratings <= 1)
    row = int(np.flatnonzero(~in_range.all(axis=1))[0])
    raise InvalidArgument(field_of_row(row), "must be finite and in [0, 1]")


class ServedModel:
    """One model version: its weights, age statistics, catalogue and metadata, prepared once
    at load. Requests and answers name movies by the catalogue's ids; the arrays are in rows."""

    def __init__(
        self,
        name: str,
        version: int,
        weights: dict[str, np.ndarray],
        meta: dict[str, Any],
        catalogue: Catalogue | None = None,
    ):
        self.name = name
        self.version = version
        self.meta = meta
        self.embedding = np.ascontiguousarray(weights["embedding"], dtype=np.float32)
        self.catalogue = catalogue or Catalogue.identity(len(self.embedding))
        self.catalogue.owner = f"model {name} v{version}"
        # A model trained without a feature takes it as absent: 0 after standardisation.
        self.has_age = bool(meta.get("has_age", True))
        self.has_education = bool(meta.get("has_education", True))
        self.unit = search.unit_rows(self.embedding)
        hidden_kernel = weights["hidden_kernel"].astype(np.float32)
        units = hidden_kernel.shape[1]
        self.age_mean = float(meta["age_mean"])
        self.age_std = float(meta["age_std"])
        # The embedding and the hidden layer are both linear before the relu, so one
        # ((2 + movies + 1) x (units + 1)) matrix takes [age, education, ratings, 1] to the
        # hidden layer (its last row: the bias). One watcher by liked ids then adds up rows of
        # it instead of multiplying a (1, movies) row through it (59,047 movies: 0.01 ms, not
        # 10). Its last column makes one more unit, always 1 (and so after the relu), that
        # carries the output bias through the output product.
        self.input_to_hidden = np.zeros((2 + self.num_movies + 1, units + 1), np.float32)
        self.input_to_hidden[:2, :units] = hidden_kernel[:2]
        self.input_to_hidden[2:-1, :units] = self.embedding @ hidden_kernel[2:]
        self.input_to_hidden[-1, :units] = weights["hidden_bias"]
        self.input_to_hidden[-1, units] = 1.0
        # The output layer, bias as its last row, negated: the product is minus the logits.
        output = np.vstack([weights["output_kernel"], weights["output_bias"]])
        self.negated_output = -output.astype(np.float32, copy=False)
        self._tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # Whatever the serving layer keeps for repeated queries, keyed as it likes; it goes
        # with the version.
        self.memo: dict[Any, Any] = {}

    def remember(self, key: Any, answer: Any) -> Any:
        """Keep `answer` in the memo (bounded: it starts over when full) and return it."""
        if len(self.memo) >= MEMO_ANSWERS:
            self.memo.clear()
        self.memo[key] = answer
        return answer

    @property
    def num_movies(self) -> int:
        return int(self.embedding.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.embedding.shape[1])

    def vectors(self, ids: np.ndarray, field: str = "movie_ids") -> tuple[np.ndarray, np.ndarray]:
        """The rows of movies `ids` and their embedding vectors (every row, in catalogue order,
        when `ids` is empty)."""
        if ids.size == 0:
            return np.arange(self.num_movies), self.embedding
        rows = self.catalogue.rows(field, ids)
        return rows, self.embedding[rows]

    def nearest(
        self,
        *,
        movie_id: int | None,
        vector: np.ndarray | None,
        k: int,
        metric: str,
        exclude: np.ndarray,
    ) -> tuple[list[int], list[float]]:
        """Rows and scores of the k nearest movies, best first; the query movie is excluded.
        `movie_id` and `exclude` are the catalogue's ids (catalogue.ids maps the rows back)."""
        if k < 0:
            raise InvalidArgument("k", f"must be >= 0, got {k}")
        exclude = self.catalogue.rows("exclude_movie_ids", exclude)
        if (movie_id is None) == (vector is None):
            raise InvalidArgument("query", "set exactly one of movie_id or vector")
        if movie_id is not None:
            row = self.catalogue.row("movie_id", movie_id)
            if self.num_movies <= TABLE_MOVIES:
                return self._from_table(row, k, metric, set(exclude.tolist()))
            query = self.embedding[row]
            exclude = np.append(exclude, row)
        else:
            assert vector is not None
            query = self._check_vector(vector, metric)
        row_scores = search.scores(self.embedding, self.unit, query, metric)
        rows = search.top_k(row_scores, k, exclude)
        return rows.tolist(), row_scores[rows].tolist()

    def _from_table(
        self, row: int, k: int, metric: str, excluded: set[int]
    ) -> tuple[list[int], list[float]]:
        """A movie's neighbours read off its row of the ranking table: no search per query."""
        order, ranked_scores = self._table(metric)
        ids = order[row, : k + len(excluded)].tolist()
        scores = ranked_scores[row, : k + len(excluded)].tolist()
        if excluded:
            kept = [i for i, m in enumerate(ids) if m not in excluded][:k]
            return [ids[i] for i in kept], [scores[i] for i in kept]
        return ids[:k], scores[:k]

    def _table(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Every movie's other movies ranked (ties by lower id), built on first use."""
        if metric not in self._tables:
            # Scored exactly as a search scores them, so both paths rank alike.
            order = np.empty((self.num_movies, self.num_movies - 1), dtype=np.int32)
            ranked = np.empty(order.shape, dtype=np.float32)
            for m in range(self.num_movies):
                row = search.scores(self.embedding, self.unit, self.embedding[m], metric)
                order[m] = search.top_k(row, self.num_movies, np.array([m]))
                ranked[m] = row[order[m]]
            self._tables[metric] = (order, ranked)  # a racing thread builds the same table
        return self._tables[metric]

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
        x = np.empty((len(watchers.ratings), 2 + self.num_movies), dtype=np.float32)
        x[:, 0] = (watchers.age_years - self.age_mean) / self.age_std if self.has_age else 0.0
        x[:, 1] = watchers.education if self.has_education else 0.0
        x[:, 2:] = watchers.ratings
        hidden = x @ self.input_to_hidden[:-1]
        hidden += self.input_to_hidden[-1]
        np.maximum(hidden, 0.0, out=hidden)
        return _sigmoid_of_negated(hidden @ self.negated_output)

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
        _check_ratings(matrix[rated], lambda row: f"watchers[{rated[row]}].ratings")
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
        _check_ratings(watchers.ratings, lambda row: where.format(row=row, field="ratings"))
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

    def reconstruct(self, watchers: Watchers, top_k: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities per watcher, and the rows of its top_k likeliest movies not liked
        (rating < 0.5)."""
        probabilities, padded = self.reconstruct_padded(watchers, top_k)
        if not top_k:
            return probabilities, []
        return probabilities, search.unpadded(padded)

    def reconstruct_padded(self, watchers: Watchers, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """`reconstruct` with the recommended rows as one (watchers, top_k) matrix, -1 where a
        watcher has fewer than top_k movies not liked."""
        _check_top_k(top_k)
        probabilities = self.forward(watchers)
        return probabilities, search.top_k_padded(probabilities, top_k, watchers.ratings >= 0.5)

    def reconstruct_one(
        self,
        ratings: Sequence[float],
        liked: Sequence[int],
        age_years: float,
        education: int,
        top_k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`reconstruct` of one watcher: probabilities (movies,) and the rows of its top_k
        likeliest movies not liked, in about fifteen numpy calls on vectors (each costs a
        microsecond or two here, a 1 x 80 product no more). The hidden layer adds up the
        folded rows of the rated movies, the features' rows and the bias row."""
        self._check_watcher(0, ratings, liked, age_years, education)
        _check_top_k(top_k)
        age = (age_years - self.age_mean) / self.age_std if self.has_age else 0.0
        level = education if self.has_education else 0
        # Only the rows of rated movies enter the sum, in the same order for ratings and for
        # liked ids: a watcher described either way gets the very same floats.
        if ratings:
            values = np.array(ratings[:], np.float32)
            _check_ratings(values[None], lambda _: "watchers[0].ratings")
            rows = np.flatnonzero(values).tolist()
            weights = values[rows].tolist()
            excluded = np.flatnonzero(values >= 0.5).tolist()
        else:
            rows = excluded = self._liked_rows(0, liked)
            weights = [1.0] * len(rows)
        x = np.array([age, level, *weights, 1.0], np.float32)
        hidden = x @ self.input_to_hidden.take([0, 1, *[r + 2 for r in rows], -1], axis=0)
        np.maximum(hidden, 0.0, out=hidden)
        probabilities = _sigmoid_of_negated(hidden @ self.negated_output)
        return probabilities, search.top_k(probabilities, top_k, excluded)
