"""Users' datasets: sparse ratings, catalogue, watcher features; validated, built, stored."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgument, NotFound, ResourceExhausted, quoted
from .staged import (
    ARRIVED,
    SORTED,
    Columns,
    Distinct,
    Seen,
    movie_rows_of,
    window_rows,
    write_npz_streamed,
    write_sparse_rows,
)
from .versions import (
    DATASETS_DIR,
    NAME_RE,
    check_store_name,
    commit,
    discard,
    fsync_dir,
    naming,
    retire,
    staging_dir,
    storing,
    version_numbers,
    write_file,
    write_npz,
)

log = logging.getLogger(__name__)

METADATA = "metadata.json"
ARRAYS = "dataset.npz"
MAX_DESCRIPTION = 4096  # characters
MAX_AGE = 150.0
MAX_MOVIE_ID = 2**31 - 1  # the contract's movie ids are int32
# An import touches its staging directory this often, so that no process sharing the store
# takes it for one left behind (versions.STALE_STAGING_SECONDS) however slowly it streams.
TOUCH_SECONDS = 60.0


@dataclass(frozen=True)
class Ratings:
    """Sparse rows (CSR) by watcher: watcher i rated the movies of rows
    movie_rows[indptr[i]:indptr[i + 1]] (ascending) with those values; never dense."""

    watcher_ids: np.ndarray  # int64 (W,), ascending, distinct
    indptr: np.ndarray  # int64 (W + 1,)
    movie_rows: np.ndarray  # int32 (nnz,), rows into StoredDataset.movie_ids
    values: np.ndarray  # float32 (nnz,)
    timestamps: np.ndarray | None  # int64 (nnz,) Unix seconds, or None when not given


@dataclass(frozen=True)
class StoredDataset:
    """One dataset version (version 0: built, not stored yet); `info` is its metadata.json."""

    name: str
    version: int
    info: dict[str, Any]
    movie_ids: np.ndarray  # int64 (M,), ascending: the catalogue, every movie rated or listed
    titles: np.ndarray  # str (M,), "" = none
    genres: np.ndarray  # str (M,), "A|B|C", "" = none
    ratings: Ratings
    age_years: np.ndarray  # float32 (W,) aligned with ratings.watcher_ids, NaN = absent
    education: np.ndarray  # float32 (W,), NaN = absent


def _field(chunk: int, part: str, column: str, row: int | None = None) -> str:
    return f"chunks[{chunk}].{part}.{column}" + ("" if row is None else f"[{row}]")


def _first(bad: np.ndarray) -> int | None:
    """The first row where `bad` holds, if any."""
    row = int(np.argmax(bad)) if bad.size else 0
    return row if bad.size and bad[row] else None


class _Part:
    """The columns of one kind of chunk, kept as the chunks' own arrays until the build
    joins each of them once (a growing array would be copied at every chunk)."""

    def __init__(self, part: str, optional: tuple[str, ...]) -> None:
        self.part = part
        self.optional = optional  # columns a chunk may leave empty
        self.arrays: dict[str, list[np.ndarray]] = {}
        self.chunks: list[int] = []  # the stream index of each chunk kept
        self.starts: list[int] = [0]  # where each chunk's rows start in the joined columns

    def check(self, chunk: int, columns: dict[str, np.ndarray]) -> int:
        """The chunk's number of rows; its columns must all have it (optional ones may be
        empty)."""
        (first, ids), *others = columns.items()
        for column, values in others:
            if len(values) != len(ids) and not (column in self.optional and len(values) == 0):
                empty = " (or none)" if column in self.optional else ""
                raise InvalidArgument(
                    _field(chunk, self.part, column, min(len(values), len(ids))),
                    f"has {len(values)} values where {first} has {len(ids)}: "
                    f"the columns of a chunk have one length{empty}",
                )
        return len(ids)

    def bound(
        self, chunk: int, column: str, values: np.ndarray, bad: np.ndarray, bound: str
    ) -> None:
        row = _first(bad)
        if row is not None:
            raise InvalidArgument(
                _field(chunk, self.part, column, row), f"{bound}, got {values[row]}"
            )

    def add(self, chunk: int, columns: dict[str, np.ndarray]) -> None:
        for column, values in columns.items():
            self.arrays.setdefault(column, []).append(values)
        self.chunks.append(chunk)
        self.starts.append(self.starts[-1] + len(next(iter(columns.values()))))

    def join(self, column: str, dtype: Any) -> np.ndarray:
        """One column of every chunk, in stream order; the chunks' own arrays are freed."""
        return np.concatenate(self.arrays.pop(column, []) or [np.empty(0, dtype)])

    def locate(self, position: int, column: str) -> str:
        """The field of a row of the joined columns: its chunk in the stream and its row."""
        i = int(np.searchsorted(self.starts, position, side="right")) - 1
        return _field(self.chunks[i], self.part, column, position - self.starts[i])


@dataclass(frozen=True)
class StagedDataset:
    """A dataset built in its staging directory (its dataset.npz), not yet a version."""

    name: str
    path: Path
    info: dict[str, Any]
    data_bytes: int


def _remove(staged: Path, arrived: Columns) -> None:
    arrived.close()
    discard(staged)


class DatasetBuilder:
    """Fed chunk by chunk by an import. Each chunk is checked as it arrives and its ratings
    are appended to files in the builder's staging directory (under the store's `root`, or
    a temporary one); the checks across chunks (a watcher described twice, a movie given two
    titles) and the sparse rows are made once, by `stage`, in memory bounded by a window of
    ratings (staged.py). Watchers' features and the catalogue stay in memory: they grow with
    the watchers and movies, not with the ratings. A refusal of `stage`, `discard` or the
    builder's garbage collection removes the staging directory."""

    def __init__(
        self, name: str, description: str, max_ratings: int, root: Path | None = None
    ) -> None:
        self.name = check_store_name("chunks[0].header.name", name)
        if len(description) > MAX_DESCRIPTION:
            raise InvalidArgument(
                "chunks[0].header.description",
                f"at most {MAX_DESCRIPTION} characters, got {len(description)}",
            )
        self.description = description
        self.max_ratings = max_ratings
        self.num_rows = 0  # rating rows received, duplicates included
        self.window_rows: int | None = None  # ratings sorted at once; None: staged's choice
        self._ratings = _Part("ratings", optional=("timestamps",))
        self._watchers = _Part("watchers", optional=("age_years", "education"))
        self._movies = _Part("movies", optional=("titles", "genres"))
        self._timestamped: tuple[int, bool] | None = None  # the first rating chunk's choice
        self._what = f"a new version of dataset {self.name!r}"
        with storing(self._what):
            self.staged = (
                staging_dir(root / self.name)
                if root is not None
                else Path(tempfile.mkdtemp(prefix="dataset-"))
            )
        self._arrived = Columns(self.staged, "arrived.", ARRIVED)
        self.discard = weakref.finalize(self, _remove, self.staged, self._arrived)
        self._rated_by = Distinct()  # the watchers who rated, with their numbers of ratings
        self._rated = Seen()  # the movies rated
        self._grouped = True  # so far each watcher's ratings came together, ascending
        self._last_watcher = -1
        self._touched = time.monotonic()

    def add_ratings(
        self, chunk: int, watcher_ids: Any, movie_ids: Any, ratings: Any, timestamps: Any = ()
    ) -> None:
        part = self._ratings
        columns: dict[str, np.ndarray] = {
            "watcher_ids": np.asarray(watcher_ids, dtype=np.int64),
            "movie_ids": np.asarray(movie_ids, dtype=np.int64),
            "ratings": np.asarray(ratings, dtype=np.float32),
            "timestamps": np.asarray(timestamps, dtype=np.int64),
        }
        n = part.check(chunk, columns)
        if not n:
            return
        self.num_rows += n
        if self.num_rows > self.max_ratings:
            raise ResourceExhausted(
                f"chunks[{chunk}].ratings: the import passes {self.max_ratings:,} ratings, "
                "the server's limit (serve --max-dataset-ratings)"
            )
        ids = columns["watcher_ids"]
        part.bound(chunk, "watcher_ids", ids, ids < 0, "must be >= 0")
        movies = columns["movie_ids"]
        part.bound(chunk, "movie_ids", movies, movies < 0, "must be >= 0")
        ratings = columns["ratings"]
        part.bound(chunk, "ratings", ratings, ~np.isfinite(ratings), "must be finite")
        has_time = len(columns["timestamps"]) > 0
        if self._timestamped is None:
            self._timestamped = (chunk, has_time)
        elif self._timestamped[1] != has_time:
            first, had = self._timestamped
            raise InvalidArgument(
                _field(chunk, "ratings", "timestamps"),
                f"{'empty' if had else 'given'} here but {'given' if had else 'empty'} in "
                f"chunks[{first}]: give timestamps with every rating or with none",
            )
        if not has_time:
            del columns["timestamps"]
        ascending = bool(np.all(ids[1:] >= ids[:-1]))
        self._grouped &= ascending and int(ids[0]) >= self._last_watcher
        self._last_watcher = int(ids[-1])
        self._rated_by.add(ids, ascending)
        self._rated.add(movies)
        # The staged files stand for the dataset.npz they become: their names mean nothing to
        # a caller told there was no space for them.
        with storing(self._what), naming(self.staged / ARRAYS):
            self._arrived.append(columns)  # movie ids as int32: the contract's
        if time.monotonic() - self._touched > TOUCH_SECONDS:
            os.utime(self.staged)  # a slow import is not a staging directory left behind
            self._touched = time.monotonic()

    def add_watchers(
        self, chunk: int, watcher_ids: Any, age_years: Any = (), education: Any = ()
    ) -> None:
        part = self._watchers
        columns: dict[str, np.ndarray] = {
            "watcher_ids": np.asarray(watcher_ids, dtype=np.int64),
            "age_years": np.asarray(age_years, dtype=np.float32),
            "education": np.asarray(education, dtype=np.int64),
        }
        n = part.check(chunk, columns)
        ids, ages, education = columns.values()
        part.bound(chunk, "watcher_ids", ids, ids < 0, "must be >= 0")
        outside = ~((ages >= 0) & (ages <= MAX_AGE))  # NaN included
        part.bound(chunk, "age_years", ages, outside, f"must be in 0..{MAX_AGE:g} years")
        part.bound(chunk, "education", education, education < 0, "must be >= 0")
        absent = np.full(n, np.nan, dtype=np.float32)
        part.add(
            chunk,
            {
                "watcher_ids": ids,
                "age_years": ages if len(ages) else absent,
                "education": education.astype(np.float32) if len(education) else absent,
            },
        )

    def add_movies(self, chunk: int, movie_ids: Any, titles: Any = (), genres: Any = ()) -> None:
        part = self._movies
        columns: dict[str, np.ndarray] = {
            "movie_ids": np.asarray(movie_ids, dtype=np.int64),
            # Python strings until the build: a fixed-width numpy string column would take
            # 4 bytes for each character of the chunk's longest text, in every row.
            "titles": np.asarray(titles, dtype=object),
            "genres": np.asarray(genres, dtype=object),
        }
        n = part.check(chunk, columns)
        ids = columns["movie_ids"]
        bad = (ids < 0) | (ids > MAX_MOVIE_ID)
        part.bound(chunk, "movie_ids", ids, bad, f"must be in 0..{MAX_MOVIE_ID}")
        for column in ("titles", "genres"):
            if not len(columns[column]):
                columns[column] = np.full(n, "", dtype=object)
        part.add(chunk, columns)

    def build(self) -> StoredDataset:
        """The dataset in memory (version 0), as `stage` builds it; nothing stays on disk."""
        staged = self.stage()
        try:
            return _read(staged.path, self.name, 0, staged.info)
        finally:
            self.discard()

    def stage(self) -> StagedDataset:
        """Build the dataset into the staging directory: a (watcher, movie) rated twice keeps
        its last rating; the features of watchers who rated nothing are dropped; both are
        counted in the info. A refusal, or a write refused for lack of space
        (RESOURCE_EXHAUSTED), removes the staging directory."""
        try:
            with storing(self._what), naming(self.staged / ARRAYS):
                return self._stage()
        except BaseException:
            self.discard()
            raise

    def _stage(self) -> StagedDataset:
        if not self.num_rows:
            raise InvalidArgument("chunks", "no ratings: an import needs at least one rating")
        listed, titles, genres = self._catalogue_text()
        described, ages, education = self._features()
        self._arrived.close()
        movie_ids = np.union1d(self._rated.result(), listed)
        sorted_columns = Columns(self.staged, "sorted.", SORTED)
        rows = write_sparse_rows(
            self._arrived,
            *self._rated_by.result(),
            movie_rows_of(movie_ids),
            len(movie_ids),
            self._grouped,
            sorted_columns,
            self.window_rows or window_rows(self.num_rows),
        )
        self._arrived.remove()
        watcher_ids = rows.watcher_ids
        # Features of the watchers who rated; the others' are dropped.
        at = np.searchsorted(watcher_ids, described)
        rated = at < len(watcher_ids)
        rated[rated] = watcher_ids[at[rated]] == described[rated]
        age_years = np.full(len(watcher_ids), np.nan, dtype=np.float32)
        age_years[at[rated]] = ages[rated]
        education_levels = np.full(len(watcher_ids), np.nan, dtype=np.float32)
        education_levels[at[rated]] = education[rated]
        catalogue_titles = np.full(len(movie_ids), "", dtype=object)
        catalogue_titles[np.searchsorted(movie_ids, listed)] = titles
        catalogue_genres = np.full(len(movie_ids), "", dtype=object)
        catalogue_genres[np.searchsorted(movie_ids, listed)] = genres
        num_ratings = int(rows.indptr[-1])
        info = {
            "name": self.name,
            "description": self.description,
            "num_ratings": num_ratings,
            "num_watchers": len(watcher_ids),
            "num_movies": len(movie_ids),
            "has_age": bool(np.isfinite(age_years).any()),
            "has_education": bool(np.isfinite(education_levels).any()),
            "min_rating": rows.min_rating,
            "max_rating": rows.max_rating,
            "num_titled_movies": int(np.count_nonzero(catalogue_titles != "")),
            "num_duplicate_ratings": self.num_rows - num_ratings,
            "num_dropped_watchers": int(np.count_nonzero(~rated)),
        }
        arrays = {
            "movie_ids": movie_ids,
            "titles": catalogue_titles.astype(str),  # stored as numpy strings: no pickles
            "genres": catalogue_genres.astype(str),
            "watcher_ids": watcher_ids,
            "indptr": rows.indptr,
            "age_years": age_years,
            "education": education_levels,
        }
        per_rating = ["movie_rows", "values"] + ["timestamps"] * self._has_time
        write_npz_streamed(
            self.staged / ARRAYS, arrays, {key: (sorted_columns, key) for key in per_rating}
        )
        sorted_columns.remove()
        return StagedDataset(self.name, self.staged, info, (self.staged / ARRAYS).stat().st_size)

    @property
    def _has_time(self) -> bool:
        return self._timestamped is not None and self._timestamped[1]

    def _features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Described watchers (ascending) with their age and education; each once."""
        part = self._watchers
        ids = part.join("watcher_ids", np.int64)
        order = np.argsort(ids, kind="stable")
        ids_sorted = ids[order]
        again = np.flatnonzero(ids_sorted[1:] == ids_sorted[:-1]) + 1
        if again.size:
            position = int(order[again].min())  # the first repeat in the stream
            first = int(order[np.searchsorted(ids_sorted, ids[position])])
            raise InvalidArgument(
                part.locate(position, "watcher_ids"),
                f"watcher {ids[position]} is described already, at "
                f"{part.locate(first, 'watcher_ids')}: describe each watcher once",
            )
        ages = part.join("age_years", np.float32)[order]
        education = part.join("education", np.float32)[order]
        return ids_sorted, ages, education

    def _catalogue_text(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Listed movies (ascending, each once) with their titles and genres. A movie may be
        listed more than once, but never with two different titles (or genres)."""
        part = self._movies
        ids = part.join("movie_ids", np.int64)
        listed = np.unique(ids)
        merged = []
        for column in ("titles", "genres"):
            text = part.join(column, object)
            given = np.flatnonzero(text != "")  # "" = not given by this listing
            order = given[np.argsort(ids[given], kind="stable")]
            ids_sorted, text_sorted = ids[order], text[order]
            same_movie = ids_sorted[1:] == ids_sorted[:-1]
            clash = np.flatnonzero(same_movie & (text_sorted[1:] != text_sorted[:-1])) + 1
            if clash.size:
                i = clash[np.argmin(order[clash])]  # the first clash in the stream
                raise InvalidArgument(
                    part.locate(int(order[i]), column),
                    f"movie {ids_sorted[i]} is listed with {quoted(str(text_sorted[i]))} here "
                    f"but with {quoted(str(text_sorted[i - 1]))} at "
                    f"{part.locate(int(order[i - 1]), column)}",
                )
            out = np.full(len(listed), "", dtype=text.dtype)
            out[np.searchsorted(listed, ids_sorted)] = text_sorted
            merged.append(out)
        return listed, merged[0], merged[1]


def _metadata(info: dict[str, Any], data_bytes: int) -> bytes:
    """metadata.json, whose size_bytes counts the arrays and this file itself."""
    size = data_bytes
    while True:
        text = json.dumps({**info, "size_bytes": size}, indent=2, sort_keys=True).encode()
        if data_bytes + len(text) == size:
            return text
        size = data_bytes + len(text)


def _read_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((path / METADATA).read_text())
    return info


def _read(path: Path, name: str, version: int, info: dict[str, Any]) -> StoredDataset:
    """The dataset whose arrays are `path`'s dataset.npz."""
    # An open file, not a path: np.load leaks its own handle on a damaged archive.
    with open(path / ARRAYS, "rb") as f, np.load(f, allow_pickle=False) as npz:
        a = {key: npz[key] for key in npz.files}
    return StoredDataset(
        name=name,
        version=version,
        info=info,
        movie_ids=a["movie_ids"],
        titles=a["titles"],
        genres=a["genres"],
        ratings=Ratings(
            watcher_ids=a["watcher_ids"],
            indptr=a["indptr"],
            movie_rows=a["movie_rows"],
            values=a["values"],
            timestamps=a.get("timestamps"),
        ),
        age_years=a["age_years"],
        education=a["education"],
    )


class DatasetStore:
    """Dataset versions under `<data-dir>/datasets/<name>/<version>/`, written like model
    versions (staging, fsync, rename under the lock); the index of their infos is in memory
    and `load_new` keeps it in step with other processes sharing the directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / DATASETS_DIR
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._infos: dict[str, dict[int, dict[str, Any]]] = {}
        self._damaged: set[Path] = set()  # warned about once

    def load_new(self) -> int:
        """Read the versions other processes stored, forget the ones they deleted, and
        return how many were added."""
        added = 0
        with self._lock:
            for name, versions in list(self._infos.items()):
                for version in [v for v in versions if not (self.root / name / str(v)).is_dir()]:
                    del versions[version]
                if not versions:
                    del self._infos[name]
            for parent in sorted(self.root.iterdir()):
                if not (parent.is_dir() and NAME_RE.fullmatch(parent.name)):
                    continue
                for version in version_numbers(parent):
                    path = parent / str(version)
                    if version in self._infos.get(parent.name, {}) or path in self._damaged:
                        continue
                    try:
                        info = _read_info(path)
                    except (OSError, ValueError) as exc:
                        log.warning("skipping damaged dataset version %s: %s", path, exc)
                        self._damaged.add(path)
                        continue
                    self._infos.setdefault(parent.name, {})[version] = info
                    added += 1
        return added

    def resolve(self, name: str, version: int, field: str = "dataset") -> dict[str, Any]:
        """The info of the version asked for; version 0 is the newest."""
        name = check_store_name(f"{field}.name", name)
        if version < 0:
            raise InvalidArgument(f"{field}.version", f"must be >= 0 (0 = newest), got {version}")
        with self._lock:
            versions = self._infos.get(name)
            if not versions:
                raise NotFound(f"dataset {name!r} not found")
            if version == 0:
                return versions[max(versions)]
            if version not in versions:
                raise NotFound(
                    f"dataset {name!r} has no version {version} (has {sorted(versions)})"
                )
            return versions[version]

    def delete(self, name: str, version: int) -> list[dict[str, Any]]:
        """Delete one version, or every version of the name (0); the infos deleted. Their
        numbers are not given out again."""
        newest = self.resolve(name, version)  # NotFound, or a malformed name or version
        infos = self.list(name) if version == 0 else [newest]
        deleted = []
        for info in infos:
            what = f"the deletion of dataset {name!r} v{info['version']}"
            try:
                with storing(what, "the version stays"):
                    retire(self.root / name, info["version"])
            except FileNotFoundError:
                continue  # another process deleted it just now
            deleted.append(info)
            with self._lock:
                self._infos.get(name, {}).pop(info["version"], None)
                if not self._infos.get(name, True):
                    del self._infos[name]
        if not deleted:
            raise NotFound(f"dataset {name!r} version {version} was deleted already")
        return deleted

    def save(self, dataset: StoredDataset) -> dict[str, Any]:
        """Store a built dataset as the name's next version; its info. A write refused for
        lack of space ends RESOURCE_EXHAUSTED with nothing stored."""
        with storing(f"a new version of dataset {dataset.name!r}"):
            staged = staging_dir(self.root / dataset.name)
            try:
                ratings = dataset.ratings
                arrays = {
                    "movie_ids": dataset.movie_ids,
                    "titles": dataset.titles,
                    "genres": dataset.genres,
                    "watcher_ids": ratings.watcher_ids,
                    "indptr": ratings.indptr,
                    "movie_rows": ratings.movie_rows,
                    "values": ratings.values,
                    "age_years": dataset.age_years,
                    "education": dataset.education,
                }
                if ratings.timestamps is not None:
                    arrays["timestamps"] = ratings.timestamps
                write_npz(staged / ARRAYS, arrays)
                data_bytes = (staged / ARRAYS).stat().st_size
            except BaseException:
                discard(staged)
                raise
            return self._commit(StagedDataset(dataset.name, staged, dataset.info, data_bytes))

    def commit(self, staged: StagedDataset) -> dict[str, Any]:
        """Store a dataset staged in this store (a DatasetBuilder given its root) as the
        name's next version; its info. Nothing is stored if this fails."""
        with storing(f"a new version of dataset {staged.name!r}"):
            return self._commit(staged)

    def _commit(self, staged: StagedDataset) -> dict[str, Any]:
        created = datetime.now(UTC).isoformat()

        def label(path: Path, version: int) -> None:
            info = {**staged.info, "version": version, "create_time": created}
            write_file(path / METADATA, _metadata(info, staged.data_bytes))
            fsync_dir(path)

        parent = self.root / staged.name
        version = commit(parent, staged.path, label)
        info = _read_info(parent / str(version))
        with self._lock:
            self._infos.setdefault(staged.name, {})[version] = info
        return info

    def load(self, name: str, version: int) -> StoredDataset:
        """A version's arrays, read from disk (a trainer process need not poll the store);
        version 0 is the newest."""
        name = check_store_name("dataset.name", name)
        version = version or max(version_numbers(self.root / name), default=0)
        if not version:
            raise NotFound(f"dataset {name!r} not found")
        path = self.root / name / str(version)
        try:
            return _read(path, name, version, _read_info(path))
        except FileNotFoundError as exc:
            raise NotFound(f"dataset {name!r} has no version {version}") from exc

    def list(self, name: str = "") -> list[dict[str, Any]]:
        """Infos sorted by name then version, of one dataset or all."""
        if name:
            check_store_name("name", name)
        with self._lock:
            return [
                info
                for n in sorted(self._infos)
                if not name or n == name
                for _, info in sorted(self._infos[n].items())
            ]
