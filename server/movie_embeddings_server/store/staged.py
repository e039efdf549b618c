"""An import's ratings on disk: appended to raw files in its staging directory as its chunks
arrive, then grouped by watcher into sparse rows and written into the dataset's .npz a window
of rows at a time, so that memory follows the window (about a 32nd of the ratings, or the
most ratings one watcher gave if more), not the import (issue 23)."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

# Columns of the ratings as they arrive, and of a bucket of them grouped by watcher: raw
# little-endian arrays, one file each (a watcher's index within its bucket fits in int32).
ARRIVED = {"watcher_ids": "<i8", "movie_ids": "<i4", "ratings": "<f4", "timestamps": "<i8"}
BUCKET = {"watchers": "<i4", "movie_rows": "<i4", "ratings": "<f4", "timestamps": "<i8"}
# The sparse rows' per-rating arrays of the stored dataset, written window by window.
SORTED = {"movie_rows": "<i4", "values": "<f4", "timestamps": "<i8"}
WINDOWS = 32  # the ratings are sorted about a 32nd of them at a time
MIN_WINDOW = 2**16  # rows; smaller imports are sorted in one window
MOVIE_TABLE = 2**22  # movie ids below this find their rows by a table (16 MB at most)
COPY_BYTES = 16 * 2**20


def window_rows(num_rows: int) -> int:
    """How many ratings are sorted at once: ~70 bytes of memory each while they are."""
    return max(num_rows // WINDOWS, MIN_WINDOW)


class Columns:
    """Named columns of one length, each appended to its own file `<prefix><name>`; a column
    never given has no file."""

    def __init__(self, directory: Path, prefix: str, dtypes: dict[str, str]) -> None:
        self.dtypes = {name: np.dtype(dtype) for name, dtype in dtypes.items()}
        self.paths = {name: directory / f"{prefix}{name}" for name in dtypes}
        self.rows = 0
        self._files: dict[str, BinaryIO] = {}

    def append(self, columns: dict[str, np.ndarray]) -> None:
        for name, values in columns.items():
            if name not in self._files:
                self._files[name] = open(self.paths[name], "ab")  # noqa: SIM115 (closed by close)
            self._files[name].write(np.ascontiguousarray(values, dtype=self.dtypes[name]).data)
        self.rows += len(next(iter(columns.values())))

    def close(self) -> None:
        """Flush and close the files (reads see every row appended)."""
        files, self._files = self._files, {}
        for f in files.values():
            f.close()

    def has(self, name: str) -> bool:
        return self.paths[name].exists()

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 of a column, read from its file (not mapped: pages of a mapped
        file count in the process's resident memory while they stay mapped)."""
        dtype = self.dtypes[name]
        with open(self.paths[name], "rb") as f:
            f.seek(start * dtype.itemsize)
            return np.fromfile(f, dtype, stop - start).astype(dtype.newbyteorder("="), copy=False)

    def remove(self) -> None:
        self.close()
        for path in self.paths.values():
            path.unlink(missing_ok=True)


class Distinct:
    """The distinct values of a stream of integer arrays, ascending, with how many times each
    came; memory follows the distinct values (merged when the unmerged ones outnumber them)."""

    def __init__(self) -> None:
        self._values = np.empty(0, dtype=np.int64)
        self._counts = np.empty(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def add(self, values: np.ndarray, ascending: bool = False) -> None:
        """Count `values` (`ascending`: they are, which saves a sort)."""
        if ascending:
            distinct, counts = _runs(values, np.ones(len(values), dtype=np.int64))
        else:
            distinct, counts = np.unique(values, return_counts=True)
        self._pending.append((distinct.astype(np.int64, copy=False), counts))
        self._pending_rows += len(distinct)
        if self._pending_rows > max(len(self._values), MIN_WINDOW):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        values = np.concatenate([self._values, *(v for v, _ in self._pending)])
        counts = np.concatenate([self._counts, *(c for _, c in self._pending)])
        self._pending, self._pending_rows = [], 0
        if not np.all(values[1:] >= values[:-1]):  # ascending already when the stream is
            order = np.argsort(values)
            values, counts = values[order], counts[order]
        self._values, self._counts = _runs(values, counts)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct values (int64, ascending) and their counts."""
        self._merge()
        return self._values, self._counts


def _runs(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending `values` each once, with the sum of their `counts`."""
    if not len(values):
        return values, counts
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return values[starts], np.add.reduceat(counts, starts)


class Seen:
    """Which ids of a stream of arrays came: a table by id below MOVIE_TABLE, Distinct above."""

    def __init__(self) -> None:
        self._table = np.zeros(0, dtype=bool)
        self._large = Distinct()

    def add(self, ids: np.ndarray) -> None:
        small = ids < MOVIE_TABLE
        if not small.all():
            self._large.add(ids[~small])
            ids = ids[small]
        top = int(ids.max(initial=-1)) + 1
        if top > len(self._table):
            grown = np.zeros(min(max(top, 2 * len(self._table)), MOVIE_TABLE), dtype=bool)
            grown[: len(self._table)] = self._table
            self._table = grown
        self._table[ids] = True

    def result(self) -> np.ndarray:
        """The ids seen, int64 ascending."""
        return np.concatenate([np.flatnonzero(self._table), self._large.result()[0]])


def movie_rows_of(movie_ids: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function from movie ids (each one of `movie_ids`, ascending) to their rows (int32)."""
    top = int(movie_ids[-1]) + 1 if len(movie_ids) else 0
    if top <= MOVIE_TABLE:  # a table by id: much faster than a search each
        table = np.zeros(top, dtype=np.int32)
        table[movie_ids] = np.arange(len(movie_ids), dtype=np.int32)
        return lambda ids: table[ids]
    return lambda ids: np.searchsorted(movie_ids, ids).astype(np.int32)


def last_of_each_pair(watchers: np.ndarray, rows: np.ndarray, num_movies: int) -> np.ndarray:
    """Indices of the last rating of each (watcher, movie) pair, by watcher then movie."""
    n = len(watchers)
    low = int(watchers.min()) if n else 0
    if (int(watchers.max()) - low + 1 if n else 1) * num_movies * n < 2**63:
        # One int64 per rating, (watcher, movie, arrival) in its digits: a plain sort of it
        # is ~5x faster than a stable argsort of the pair keys in arrival order.
        key = watchers - low
        key *= num_movies
        key += rows
        key *= n
        key += np.arange(n)
        key.sort()
        order = key % n
        del key
    else:
        order = np.lexsort((rows, watchers))  # stable: a pair's ratings in arrival order
    w, r = watchers[order], rows[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = (w[1:] != w[:-1]) | (r[1:] != r[:-1])
    return order[last]


@dataclass
class Window:
    """Every rating of some watchers (`keys`: their ids, or any keys in their order that
    `ids_of` turns into ids), in arrival order."""

    keys: np.ndarray  # int64
    movie_rows: np.ndarray  # int32
    ratings: np.ndarray  # float32
    timestamps: np.ndarray | None
    ids_of: Callable[[np.ndarray], np.ndarray]


@dataclass
class SparseRows:
    """What `write_sparse_rows` wrote, and the rest of the sparse rows, in memory."""

    watcher_ids: np.ndarray  # int64 (W,), ascending
    indptr: np.ndarray  # int64 (W + 1,)
    min_rating: float
    max_rating: float


def write_sparse_rows(
    arrived: Columns,
    watcher_ids: np.ndarray,
    counts: np.ndarray,
    movie_rows: Callable[[np.ndarray], np.ndarray],
    num_movies: int,
    grouped: bool,
    out: Columns,
    window: int,
) -> SparseRows:
    """Group the arrived ratings by watcher (`watcher_ids` are theirs, ascending, `counts` how
    many each rated; `grouped`: each watcher's ratings arrived together and in that order),
    keep the last of each (watcher, movie) pair, and append the rows' SORTED columns to
    `out`, a window of about `window` ratings at a time."""
    if grouped or arrived.rows <= window:
        windows = _arrived_windows(arrived, movie_rows, window)
    else:
        windows = _bucket_windows(arrived, watcher_ids, counts, movie_rows, window)
    ids, lengths = [], []
    low, high = np.inf, -np.inf
    for w in windows:
        kept = last_of_each_pair(w.keys, w.movie_rows, num_movies)
        keys = w.keys[kept]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ids.append(w.ids_of(keys[starts]))
        lengths.append(np.diff(np.append(starts, len(kept))))
        values = w.ratings[kept]
        low, high = min(low, float(values.min())), max(high, float(values.max()))
        columns = {"movie_rows": w.movie_rows[kept], "values": values}
        if w.timestamps is not None:
            columns["timestamps"] = w.timestamps[kept]
        del w, kept, keys
        out.append(columns)
    out.close()
    indptr = np.zeros(len(watcher_ids) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(lengths), out=indptr[1:])
    return SparseRows(np.concatenate(ids), indptr, low, high)


def _arrived_windows(
    arrived: Columns, movie_rows: Callable[[np.ndarray], np.ndarray], window: int
) -> Iterator[Window]:
    """Windows straight from the arrived columns, each ending where a watcher does: for
    ratings grouped by watcher in ascending order, or few enough for one window."""
    n, start = arrived.rows, 0
    has_time = arrived.has("timestamps")
    while start < n:
        stop = min(start + window, n)
        while True:
            ids = arrived.read("watcher_ids", start, stop)
            # The last watcher's ratings may go on past `stop`: it waits for the next window.
            cut = len(ids) if stop == n else int(np.searchsorted(ids, ids[-1]))
            if cut:
                break
            stop = min(start + 2 * (stop - start), n)  # one watcher fills it: take twice as many
        end = start + cut
        yield Window(
            ids[:cut],
            movie_rows(arrived.read("movie_ids", start, end)),
            arrived.read("ratings", start, end),
            arrived.read("timestamps", start, end) if has_time else None,
            lambda keys: keys,
        )
        start = end


def _bucket_windows(
    arrived: Columns,
    watcher_ids: np.ndarray,
    counts: np.ndarray,
    movie_rows: Callable[[np.ndarray], np.ndarray],
    window: int,
) -> Iterator[Window]:
    """Ratings in any order: one pass appends each to the bucket of its watcher (buckets of
    consecutive watchers, about `window` ratings each), then each bucket is a window."""
    before = np.cumsum(counts) - counts  # ratings of the watchers before each
    first = np.flatnonzero(np.r_[True, np.diff(before // window) > 0])  # each bucket's first
    num = len(first)
    bucket_of = np.repeat(
        np.arange(num, dtype=np.int16 if num < 2**15 else np.int32),
        np.diff(np.append(first, len(watcher_ids))),
    )
    directory = arrived.paths["watcher_ids"].parent
    buckets = [Columns(directory, f"bucket{b}.", BUCKET) for b in range(num)]
    has_time = arrived.has("timestamps")
    try:
        for start in range(0, arrived.rows, window):
            stop = min(start + window, arrived.rows)
            index = np.searchsorted(watcher_ids, arrived.read("watcher_ids", start, stop))
            bucket = bucket_of[index]
            order = np.argsort(bucket, kind="stable")  # a radix sort of small integers
            bounds = np.cumsum(np.bincount(bucket, minlength=num))
            columns = {
                "watchers": (index - first[bucket])[order],
                "movie_rows": movie_rows(arrived.read("movie_ids", start, stop))[order],
                "ratings": arrived.read("ratings", start, stop)[order],
            }
            if has_time:
                columns["timestamps"] = arrived.read("timestamps", start, stop)[order]
            del index, bucket, order
            low = 0
            for b, high in enumerate(bounds.tolist()):
                if high > low:
                    buckets[b].append({k: v[low:high] for k, v in columns.items()})
                low = high
            del columns
        arrived.remove()  # its space is the buckets' now
        for b, grouped in enumerate(buckets):
            grouped.close()
            n = grouped.rows
            yield Window(
                grouped.read("watchers", 0, n).astype(np.int64) + int(first[b]),
                grouped.read("movie_rows", 0, n),
                grouped.read("ratings", 0, n),
                grouped.read("timestamps", 0, n) if has_time else None,
                lambda keys: watcher_ids[keys],
            )
            grouped.remove()
    finally:
        for grouped in buckets:
            grouped.remove()


def write_npz_streamed(
    path: Path, arrays: dict[str, np.ndarray], staged: dict[str, tuple[Columns, str]]
) -> None:
    """An .npz as numpy.savez writes it (uncompressed .npy members, ZIP64), of `arrays` in
    memory and of `staged` columns ((columns, name) each) copied from their files a block at
    a time; flushed to disk."""
    with open(path, "wb") as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as npz:
            for key, values in arrays.items():
                with npz.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, values, allow_pickle=False)
            for key, (columns, name) in staged.items():
                dtype = columns.dtypes[name].newbyteorder("=")
                header = {
                    "descr": np.lib.format.dtype_to_descr(dtype),
                    "fortran_order": False,
                    "shape": (columns.rows,),
                }
                with (
                    npz.open(f"{key}.npy", "w", force_zip64=True) as member,
                    open(columns.paths[name], "rb") as source,
                ):
                    np.lib.format.write_array_header_1_0(member, header)
                    shutil.copyfileobj(source, member, COPY_BYTES)
        f.flush()
        os.fsync(f.fileno())
