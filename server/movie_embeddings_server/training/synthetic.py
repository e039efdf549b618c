"""The notebook's synthetic watcher/movie ratings, vectorised and seeded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

LIKE_INSIDE = 0.95  # like probability for movies whose group is within 2 of the watcher's type
LIKE_OUTSIDE = 0.05
MIN_AGE = 15
_CHUNK_CELLS = 4_000_000  # bounds the float32 draws held at once (16 MiB), whatever the shape


@dataclass(frozen=True)
class Dataset:
    """Watchers' types, ratings (uint8 0/1), raw ages in years and education levels."""

    types: np.ndarray  # (n,) int32
    ratings: np.ndarray  # (n, movies) uint8
    age_years: np.ndarray  # (n,) int32
    education: np.ndarray  # (n,) int8


def like_probability(types: np.ndarray, num_movies: int, num_types: int) -> np.ndarray:
    """(n, movies) float32: 0.95 where |m % num_types - type| < 3 (plain abs, as the notebook)."""
    groups = np.arange(num_movies) % num_types
    near = np.abs(groups[None, :] - types[:, None].astype(np.int64)) < 3
    return np.where(near, np.float32(LIKE_INSIDE), np.float32(LIKE_OUTSIDE))


def generate(
    num_watchers: int, num_movies: int, num_types: int, seed: int | Sequence[int]
) -> Dataset:
    """Draw a data set with the notebook's distribution; the same seed gives the same data."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, num_types, size=num_watchers).astype(np.int32)
    ratings = np.empty((num_watchers, num_movies), dtype=np.uint8)
    # One row of like-probabilities per type, gathered per watcher: no per-cell arithmetic
    # (unless types x movies is itself huge; then each chunk computes its own).
    small = num_types * num_movies <= _CHUNK_CELLS
    table = like_probability(np.arange(num_types), num_movies, num_types) if small else None
    chunk = max(1, _CHUNK_CELLS // max(num_movies, 1))
    starts = range(0, num_watchers, chunk)
    # Each chunk draws from its own child generator, so chunks can fill in parallel (numpy
    # releases the GIL while it draws and compares) and the result depends on the seed only.
    children = np.random.SeedSequence(seed).spawn(len(starts))

    def fill(i: int) -> None:
        rows = types[starts[i] : starts[i] + chunk]
        draws = np.random.default_rng(children[i]).random((len(rows), num_movies), np.float32)
        out = ratings[starts[i] : starts[i] + len(rows)]
        probs = like_probability(rows, num_movies, num_types) if table is None else table[rows]
        np.less(draws, probs, out=out, casting="unsafe")

    if len(starts) > 1:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(fill, range(len(starts))))
    elif starts:
        fill(0)
    # int() in the notebook truncates toward zero; astype does the same.
    age = rng.normal(20.0 + 5.0 * types, 10.0).astype(np.int64)
    age_years = np.maximum(age, MIN_AGE).astype(np.int32)
    low = types % 2
    education = rng.integers(low, types % 5 + low + 1).astype(np.int8)  # at most 5
    return Dataset(types=types, ratings=ratings, age_years=age_years, education=education)
