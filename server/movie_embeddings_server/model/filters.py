"""Which movies an answer may hold: a least number of likes, genres to keep or to leave out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgument, quoted
from .catalogue import Catalogue

# Genres a refusal lists, at most (ML-25M has 20; a user's catalogue may have many more).
LISTED_GENRES = 30
# Neighbour lists of a dataset model leave out movies with fewer likes than this, unless asked
# otherwise: their vectors are mostly noise, and they crowd the lists (docs/quality.md,
# benchmarks/neighbours.py). On small data the floor is a tenth of the most liked movie's likes
# (rounded up) when that is less, so that a catalogue whose movies all have few likes keeps them.
NEIGHBOUR_MIN_LIKES = 10


@dataclass(frozen=True)
class MovieFilter:
    """What a request asks of the movies it gets back; every movie passes the empty filter."""

    min_likes: int | None = None  # None: the default of the answer (see `left_out`)
    genres: Sequence[str] = ()  # any of these; empty: any genre
    exclude_genres: Sequence[str] = ()

    def __bool__(self) -> bool:
        return self.min_likes is not None or bool(self.genres) or bool(self.exclude_genres)


def _genre(catalogue: Catalogue, field: str, name: str) -> np.ndarray:
    """The rows with genre `name` (any case), or INVALID_ARGUMENT naming the known genres."""
    known = catalogue.genre_rows()
    found = known.get(name.casefold())
    if found is not None:
        return found[1]
    if not known:
        raise InvalidArgument(field, f"{quoted(name)}: {catalogue.owner} has no genres")
    names = [genre for genre, _ in known.values()]
    listed = ", ".join(names[:LISTED_GENRES]) + (", ..." if len(names) > LISTED_GENRES else "")
    raise InvalidArgument(
        field, f"{quoted(name)} is not a genre of {catalogue.owner} (its genres: {listed})"
    )


def neighbour_min_likes(catalogue: Catalogue) -> int:
    """The least likes of a movie in a neighbour list by default: 0 without like counts."""
    if not catalogue.has_likes or not len(catalogue):
        return 0
    return min(NEIGHBOUR_MIN_LIKES, -(-int(catalogue.num_likes.max()) // 10))


def left_out(
    catalogue: Catalogue, wanted: MovieFilter, default_min_likes: int = 0, field: str = "filter"
) -> np.ndarray | None:
    """The mask of the rows an answer must not hold, or None when every movie may be in it.
    `default_min_likes` applies when the filter sets no min_likes (a catalogue without like
    counts, synthetic data's, ignores it); `field` names the request's filter in errors."""
    mask: np.ndarray | None = None
    min_likes = default_min_likes if wanted.min_likes is None else wanted.min_likes
    if min_likes < 0:
        raise InvalidArgument(f"{field}.min_likes", f"must be >= 0, got {min_likes}")
    if min_likes > 0 and catalogue.has_likes:
        mask = catalogue.num_likes < min_likes
    elif min_likes > 0 and wanted.min_likes is not None:
        raise InvalidArgument(
            f"{field}.min_likes",
            f"{catalogue.owner} was trained on synthetic data and counts no likes: leave it "
            "unset or 0",
        )
    if wanted.genres:
        kept = np.zeros(len(catalogue), dtype=bool)
        for i, name in enumerate(wanted.genres):
            kept |= _genre(catalogue, f"{field}.genres[{i}]", name)
        mask = ~kept if mask is None else mask | ~kept
    for i, name in enumerate(wanted.exclude_genres):
        rows = _genre(catalogue, f"{field}.exclude_genres[{i}]", name)
        mask = rows.copy() if mask is None else mask | rows
    return mask
