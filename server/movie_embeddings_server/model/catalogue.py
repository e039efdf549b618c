"""A model's movies: the dataset's own ids in catalogue order, titles, genres, title search."""

from __future__ import annotations

import bisect
import re
import unicodedata
from pathlib import Path

import numpy as np

from ..errors import InvalidArgument, NotFound

FILE = "catalogue.npz"
_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits, in any script


def words(text: str) -> list[str]:
    """The words of `text`, lower case and without accents ("Misérables" -> "miserables")."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _WORD.findall(plain.casefold())


class Catalogue:
    """Row i of a model's matrices is movie `movie_ids[i]`; synthetic models number their
    movies 0..n-1 (the identity), which every lookup takes without a table."""

    def __init__(
        self,
        movie_ids: np.ndarray,
        titles: np.ndarray | None = None,
        genres: np.ndarray | None = None,
        num_likes: np.ndarray | None = None,
    ) -> None:
        self.movie_ids = np.asarray(movie_ids, dtype=np.int64)
        n = len(self.movie_ids)
        if len(np.unique(self.movie_ids)) != n:
            raise ValueError("a catalogue lists each movie once")
        self.is_identity = bool(np.array_equal(self.movie_ids, np.arange(n)))
        self.titles: list[str] | None = (
            [str(t) for t in titles] if titles is not None and any(titles) else None
        )
        self.genres = [str(g) for g in genres] if genres is not None else [""] * n
        # Likes among the training watchers; none counted (all 0) for synthetic data.
        self.has_likes = num_likes is not None
        self.num_likes = (
            np.asarray(num_likes, dtype=np.int64) if num_likes is not None else np.zeros(n, int)
        )
        self._genres: dict[str, tuple[str, np.ndarray]] | None = None
        self._row_of = {} if self.is_identity else {m: r for r, m in enumerate(self.movie_ids)}
        self._sorted = np.argsort(self.movie_ids, kind="stable")
        self._index: tuple[list[str], list[np.ndarray]] | None = None
        self.owner = "this model"  # how errors name it; ServedModel names its version

    @classmethod
    def identity(cls, n: int) -> Catalogue:
        return cls(np.arange(n))

    def __len__(self) -> int:
        return len(self.movie_ids)

    def _not_found(self, field: str, movie_id: int) -> NotFound:
        span = (
            f"movie ids are 0..{len(self) - 1}"
            if self.is_identity
            else f"its catalogue holds {len(self)} movies, by their dataset's ids"
        )
        return NotFound(f"{field}: movie {movie_id} is not in {self.owner} ({span})")

    def row(self, field: str, movie_id: int) -> int:
        """The row of one movie id (the hot path: no array is built)."""
        if movie_id < 0:
            raise InvalidArgument(field, f"movie ids must be >= 0, got {movie_id}")
        if self.is_identity:
            if movie_id < len(self):
                return movie_id
            raise self._not_found(field, movie_id)
        row = self._row_of.get(movie_id)
        if row is None:
            raise self._not_found(field, movie_id)
        return row

    def rows(self, field: str, ids: np.ndarray) -> np.ndarray:
        """Rows of many ids; negative ids are malformed, unknown ones not found."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return ids
        if ids.min() < 0:
            raise InvalidArgument(field, f"movie ids must be >= 0, got {int(ids.min())}")
        if self.is_identity:
            if ids.max() >= len(self):
                raise self._not_found(field, int(ids.max()))
            return ids
        at = np.searchsorted(self.movie_ids, ids, sorter=self._sorted)
        at = np.minimum(at, len(self) - 1)
        rows = self._sorted[at]
        missing = self.movie_ids[rows] != ids
        if missing.any():
            raise self._not_found(field, int(ids[np.argmax(missing)]))
        return rows

    def ids(self, rows: np.ndarray) -> np.ndarray:
        """The movie ids of rows."""
        return rows if self.is_identity else self.movie_ids[rows]

    def title(self, row: int) -> str:
        return self.titles[row] if self.titles else ""

    def genre_list(self, row: int) -> list[str]:
        genres = self.genres[row]
        return [] if not genres or genres == "(no genres listed)" else genres.split("|")

    def genre_rows(self) -> dict[str, tuple[str, np.ndarray]]:
        """Each genre of the catalogue, by its case-folded name: its name as written and the
        mask of the rows that have it; built on first use."""
        if self._genres is None:
            rows: dict[str, list[int]] = {}
            for row in range(len(self)):
                for genre in self.genre_list(row):
                    rows.setdefault(genre, []).append(row)
            masks = {}
            for genre, found in sorted(rows.items()):
                mask = np.zeros(len(self), dtype=bool)
                mask[found] = True
                masks[genre.casefold()] = (genre, mask)
            self._genres = masks
        return self._genres

    def search(self, query: str, limit: int) -> list[int]:
        """Rows whose title has, for every word of the query, a word starting with it
        (case and accents ignored); most-liked first, ties by lower id."""
        wanted = words(query)
        if not wanted:
            raise InvalidArgument("query", "must hold at least one letter or digit")
        if limit < 0:
            raise InvalidArgument("limit", f"must be >= 0, got {limit}")
        vocabulary, postings = self._title_index()
        found: np.ndarray | None = None
        for word in wanted:
            start = bisect.bisect_left(vocabulary, word)
            end = bisect.bisect_left(vocabulary, word + "\U0010ffff")
            rows = (
                np.unique(np.concatenate(postings[start:end]))
                if end > start
                else np.empty(0, np.int64)
            )
            found = rows if found is None else np.intersect1d(found, rows, assume_unique=True)
        assert found is not None
        order = np.lexsort((self.movie_ids[found], -self.num_likes[found]))
        return found[order][:limit].tolist()

    def _title_index(self) -> tuple[list[str], list[np.ndarray]]:
        """Each title word, sorted, and the rows whose titles hold it; built on first search."""
        if self._index is None:
            by_word: dict[str, list[int]] = {}
            for row, title in enumerate(self.titles or ()):
                for word in set(words(title)):
                    by_word.setdefault(word, []).append(row)
            vocabulary = sorted(by_word)
            self._index = (vocabulary, [np.array(by_word[w], np.int64) for w in vocabulary])
        return self._index

    def save(self, directory: Path) -> None:
        # Compressed: titles are fixed-width (4 bytes a character of the longest title), so
        # ml-latest-small's 9,742 take 6 MB uncompressed and ~0.3 MB compressed.
        with open(directory / FILE, "wb") as f:
            np.savez_compressed(
                f,
                allow_pickle=False,
                movie_ids=self.movie_ids,
                titles=np.array(self.titles or [""] * len(self), dtype=str),
                genres=np.array(self.genres, dtype=str),
                num_likes=self.num_likes,
            )

    @classmethod
    def load(cls, directory: Path, n: int) -> Catalogue:
        """The catalogue saved in a version's directory; the identity of n movies if none."""
        if not (directory / FILE).exists():
            return cls.identity(n)
        with open(directory / FILE, "rb") as f, np.load(f) as npz:
            catalogue = cls(npz["movie_ids"], npz["titles"], npz["genres"], npz["num_likes"])
        if len(catalogue) != n:
            raise ValueError(f"{directory / FILE} lists {len(catalogue)} movies, the model has {n}")
        return catalogue
