"""A model version's movie vectors: looked up by id, and the nearest neighbours of one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import InvalidArgument
from . import filters, search
from .catalogue import Catalogue

# A query's k best: its scores -> (rows, their scores).
Ranked = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
# How a query vector is scored with concurrent ones: gathered(unit vector, ranked) returns
# ranked(its cosine with every movie).
Gathered = Callable[[np.ndarray, Ranked], tuple[np.ndarray, np.ndarray]]
# Up to this many movies, every movie's neighbours are ranked once per metric (a 1,024-movie
# catalogue: 8 MiB per metric), so a query by movie id reads a row instead of searching.
TABLE_MOVIES = 1024


class MovieVectors:
    """A version's movies: their catalogue (the identity when none is given) and embedding
    vectors in its rows, with the unit rows of cosine scores and the ranking tables."""

    def __init__(self, embedding: np.ndarray, catalogue: Catalogue | None) -> None:
        self.embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        self.catalogue = catalogue or Catalogue.identity(len(self.embedding))
        self.unit = search.unit_rows(self.embedding)
        self._tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # A neighbour list's default floor of likes, and the rows it leaves out when its
        # request sets no filter: the same at every call, so found once.
        self._min_likes = filters.neighbour_min_likes(self.catalogue)
        self._unfiltered = filters.left_out(self.catalogue, filters.MovieFilter(), self._min_likes)
        if self._unfiltered is not None:
            self._unfiltered.flags.writeable = False

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
        leave_out: np.ndarray | None = None,
        gathered: Gathered | None = None,
    ) -> tuple[list[int], list[float]]:
        """Rows and scores of the k nearest movies, best first; the query movie is excluded.
        `movie_id` and `exclude` are the catalogue's ids (catalogue.ids maps the rows back);
        `leave_out`, a mask of rows (a filter's), is left out too. `gathered(unit, ranked)`,
        given, scores a query vector's unit vector by cosine (`cosines` of it, possibly with
        other calls') and returns `ranked` of its scores."""
        if k < 0:
            raise InvalidArgument("k", f"must be >= 0, got {k}")
        exclude = self.catalogue.rows("exclude_movie_ids", exclude)
        if (movie_id is None) == (vector is None):
            raise InvalidArgument("query", "set exactly one of movie_id or vector")
        if movie_id is not None:
            row = self.catalogue.row("movie_id", movie_id)
            if self.num_movies <= TABLE_MOVIES:
                return self._from_table(row, k, metric, exclude, leave_out)
            query = self.embedding[row]
            exclude = np.append(exclude, row)
        else:
            assert vector is not None
            query = self._check_vector(vector, metric)

        def ranked(row_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rows = search.top_k(row_scores, k, exclude, leave_out)
            return rows, row_scores[rows]

        if vector is not None and metric == "cosine" and gathered is not None:
            # checked: its norm is > 0
            rows, found = gathered(query / np.linalg.norm(query), ranked)
        else:
            rows, found = ranked(search.scores(self.embedding, self.unit, query, metric))
        return rows.tolist(), found.tolist()

    def cosines(self, queries: np.ndarray, product: search.Product = np.matmul) -> np.ndarray:
        """Every movie's cosine with each unit-length query (a row): (queries, movies)."""
        return search.cosines(self.unit, queries, product)

    def neighbour_left_out(self, wanted: filters.MovieFilter) -> np.ndarray | None:
        """The mask of the rows a neighbour list must not hold under `wanted` (None: every
        movie may be in it): filters.left_out with the catalogue's neighbour_min_likes as the
        default floor. Read-only: the unfiltered mask is shared by every call."""
        if not wanted:
            return self._unfiltered
        return filters.left_out(self.catalogue, wanted, self._min_likes)

    def nearest_liked(self, chosen: np.ndarray, liked: list[int], n: int = 3) -> np.ndarray:
        """For each chosen row, the (up to) n rows of `liked` (ascending) whose vectors are
        nearest to its own by cosine, nearest first, ties by lower row: (chosen, min(n, liked))."""
        rows = np.asarray(liked, dtype=np.int64)
        if not rows.size:
            return np.empty((len(chosen), 0), dtype=np.int64)
        similarity = self.unit[chosen] @ self.unit[rows].T
        return rows[np.argsort(-similarity, axis=1, kind="stable")[:, :n]]

    def _from_table(
        self, row: int, k: int, metric: str, exclude: np.ndarray, leave_out: np.ndarray | None
    ) -> tuple[list[int], list[float]]:
        """A movie's neighbours read off its row of the ranking table: no search per query;
        the rows `exclude` lists and `leave_out` masks are skipped."""
        order, ranked_scores = self._table(metric)
        if leave_out is None:
            if not exclude.size:
                return order[row, :k].tolist(), ranked_scores[row, :k].tolist()
            leave_out = np.zeros(self.num_movies, dtype=bool)
        else:
            leave_out = leave_out.copy()
        leave_out[exclude] = True
        kept = np.flatnonzero(~leave_out[order[row]])[:k]
        return order[row, kept].tolist(), ranked_scores[row, kept].tolist()

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
