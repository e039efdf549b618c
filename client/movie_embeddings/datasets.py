"""Ratings, catalogues and watcher features from MovieLens directories and CSV, TSV or Parquet
files, as numpy columns to import; parsed by pyarrow (the `data` extra), loaded on first use."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .types import DatasetColumns, MovieColumns, RatingColumns, WatcherColumns

__all__ = [
    "FORMATS",
    "DatasetColumns",
    "MovieColumns",
    "Progress",
    "RatingColumns",
    "WatcherColumns",
    "movielens_format",
    "read_movielens",
    "read_table",
]

FORMATS = ("auto", "movielens-100k", "movielens-1m", "movielens")
# Each MovieLens layout's files: the ratings, which tell the layouts apart, then the optional
# catalogue and watchers (1M's layout is also 10M's, which has no users.dat).
_LAYOUT_FILES = {
    "movielens-100k": ("u.data", "u.item", "u.user"),
    "movielens-1m": ("ratings.dat", "movies.dat", "users.dat"),
    "movielens": ("ratings.csv", "movies.csv"),
}
# The 19 genre flags that end each line of ML-100k's u.item, in order.
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_NO_GENRES = {"unknown", "(no genres listed)"}  # MovieLens's words for "none"
_PARQUET = {".parquet", ".pq"}
_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
# pyarrow's streaming CSV reader parses a block at a time; 4 MiB was the fastest of 1-16 MiB
# on a 5M-row ratings.csv (and gives a progress step every ~4 MiB).
_BLOCK_BYTES = 1 << 22

Progress = Callable[[int, int], None]  # (bytes read so far, bytes of all the files to read)
Column = str | int  # a header name, or a 0-based position in a file without a header


def _arrow() -> tuple[Any, Any, Any, Any]:
    """pyarrow and its csv, compute and parquet modules, imported when a file is read."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            "reading data files needs pyarrow: pip install 'movie-embeddings[data]'"
        ) from exc
    return pa, pcsv, pc, pq


class _Files:
    """The files one read goes through, counted in bytes for a progress callback."""

    def __init__(self, paths: Sequence[Path], progress: Progress | None) -> None:
        self.total = sum(p.stat().st_size for p in paths)  # a missing file fails here, first
        self.done = 0
        self.progress = progress

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done, self.total)

    @contextmanager
    def open(self, path: Path, decode: bool) -> Iterator[tuple[Any, Callable[[], None]]]:
        """A source for pyarrow and a function that reports how far it has been read.

        `decode`: a small text file, read whole and given to pyarrow as UTF-8 (decoded from
        Latin-1 when it is not valid UTF-8: ML-100k's u.item, ML-1M's movies.dat). Otherwise
        streamed as it is (UTF-8; numbers only, in the big ratings files).
        """
        pa = _arrow()[0]
        start = self.done
        if decode:
            data = path.read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                data = data.decode("latin-1").encode("utf-8")
            yield pa.BufferReader(data), lambda: None
        else:
            with path.open("rb") as file:
                yield file, lambda: self._report(start + file.tell())
        self.done = start + path.stat().st_size
        self._report(self.done)


def _read_csv(
    files: _Files,
    path: Path,
    types: Mapping[str, Any],
    *,
    sep: str,
    header: bool,
    quoted: bool = True,
    decode: bool = False,
) -> Any:
    """The columns `types` names (header names, or f0, f1, ... without a header) of a
    delimited file, as a pyarrow Table of those types."""
    pa, pcsv, _, _ = _arrow()
    read = pcsv.ReadOptions(block_size=_BLOCK_BYTES, autogenerate_column_names=not header)
    parse = pcsv.ParseOptions(delimiter=sep, quote_char='"' if quoted else False)
    # Explicit types: the streaming reader would otherwise guess them from the first block
    # and fail on a later "3.5" in a column that began with whole numbers.
    convert = pcsv.ConvertOptions(include_columns=list(types), column_types=dict(types))
    with files.open(path, decode) as (source, report):
        try:
            reader = pcsv.open_csv(
                source, read_options=read, parse_options=parse, convert_options=convert
            )
            batches = []
            for batch in reader:
                batches.append(batch)
                report()
        except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
        return pa.Table.from_batches(batches, schema=reader.schema)


def _values(column: Any, what: str, fill: Any = None) -> np.ndarray:
    """A pyarrow column as numpy; a missing value is an error unless `fill` replaces it."""
    pc = _arrow()[2]
    if column.null_count:
        if fill is None:
            row = pc.index(pc.is_null(column), True).as_py()
            raise ValueError(f"{what} has no value in data row {row + 1}")
        column = column.fill_null(fill)
    return column.to_numpy()


def _genres(names: np.ndarray) -> np.ndarray:
    return np.where(np.isin(names, list(_NO_GENRES)), "", names).astype(object)


# --- MovieLens ---------------------------------------------------------------------------------


def movielens_format(path: str | Path) -> str:
    """Which MovieLens layout a directory holds, by its files: "movielens-100k" (u.data),
    "movielens-1m" (ratings.dat: 1M and 10M) or "movielens" (ratings.csv: latest, 20M, 25M,
    32M)."""
    directory = Path(path)
    for name, (ratings, *_) in _LAYOUT_FILES.items():
        if (directory / ratings).is_file():
            return name
    expected = ", ".join(files[0] for files in _LAYOUT_FILES.values())
    raise ValueError(f"{directory} is not a MovieLens directory: it has none of {expected}")


def read_movielens(
    path: str | Path, format: str = "auto", *, progress: Progress | None = None
) -> DatasetColumns:
    """A MovieLens directory's ratings, titles and genres, and ages where it has them.

    `format`: "auto" (recognised by the files), "movielens-100k" (u.data, u.item in
    Latin-1 with 19 genre flags, u.user with ages), "movielens-1m" (`::`-separated
    ratings.dat, movies.dat in Latin-1 (1M) or UTF-8 (10M), users.dat whose ages are 1M's
    bracket codes 1/18/25/35/45/50/56, kept as they are) or "movielens" (ratings.csv and
    movies.csv with quoted titles). MovieLens has no education. `progress(bytes_read,
    total_bytes)` is called as the files are read.
    """
    directory = Path(path)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if format == "auto":
        format = movielens_format(directory)
    readers = {
        "movielens-100k": _movielens_100k,
        "movielens-1m": _movielens_1m,
        "movielens": _movielens,
    }
    ratings, *others = (directory / n for n in _LAYOUT_FILES[format])
    present = [ratings, *(p for p in others if p.is_file())]  # catalogue, users: optional
    return readers[format](_Files(present, progress), *present)


def _optional(paths: Sequence[Path], name: str) -> Path | None:
    return next((p for p in paths if p.name == name), None)


def _movielens_100k(files: _Files, ratings: Path, *others: Path) -> DatasetColumns:
    int8, int32, int64, float32, string = _types("int8", "int32", "int64", "float32", "string")
    table = _read_csv(
        files,
        ratings,
        {"f0": int64, "f1": int32, "f2": float32, "f3": int64},
        sep="\t",
        header=False,
        quoted=False,
    )
    columns = _rating_columns(table, ("f0", "f1", "f2", "f3"), "u.data")
    movies = watchers = None
    if (item := _optional(others, "u.item")) is not None:
        flags = {f"f{5 + i}": int8 for i in range(len(GENRES_100K))}
        table = _read_csv(
            files,
            item,
            {"f0": int32, "f1": string, **flags},
            sep="|",
            header=False,
            quoted=False,
            decode=True,
        )
        on = np.column_stack([_values(table[f], f"u.item column {f}") for f in flags]) > 0
        genres = ["|".join(g for g, yes in zip(GENRES_100K, row, strict=True) if yes) for row in on]
        movies = MovieColumns(
            _values(table["f0"], "u.item movie id"),
            _values(table["f1"], "u.item title", ""),
            _genres(np.array(genres, dtype=object)),
        )
    if (user := _optional(others, "u.user")) is not None:
        table = _read_csv(
            files, user, {"f0": int64, "f1": float32}, sep="|", header=False, quoted=False
        )
        watchers = WatcherColumns(
            _values(table["f0"], "u.user user id"), _values(table["f1"], "u.user age", np.nan)
        )
    return DatasetColumns(columns, movies, watchers)


def _movielens_1m(files: _Files, ratings: Path, *others: Path) -> DatasetColumns:
    int32, int64, float32, string = _types("int32", "int64", "float32", "string")
    # Every field of ratings.dat and users.dat is free of ':', so "::" reads as ':' with an
    # empty field between each two (f1, f3, ...), which pyarrow's CSV reader parses at speed.
    table = _read_csv(
        files,
        ratings,
        {"f0": int64, "f2": int32, "f4": float32, "f6": int64},
        sep=":",
        header=False,
        quoted=False,
    )
    columns = _rating_columns(table, ("f0", "f2", "f4", "f6"), "ratings.dat")
    movies = watchers = None
    if (path := _optional(others, "movies.dat")) is not None:
        # Titles hold ':' ("Star Wars: Episode IV ..."): split whole lines on "::" instead.
        pc = _arrow()[2]
        lines = _read_csv(
            files, path, {"f0": string}, sep="\x1f", header=False, quoted=False, decode=True
        )["f0"]
        parts = pc.split_pattern(lines, "::", max_splits=2)
        short = pc.less(pc.list_value_length(parts), 3)
        if pc.any(short).as_py():
            line = pc.index(short, True).as_py() + 1
            raise ValueError(f"{path}: line {line} is not MovieID::Title::Genres")
        try:
            ids = pc.cast(pc.list_element(parts, 0), int32)
        except _arrow()[0].ArrowInvalid as exc:
            raise ValueError(f"{path}: {exc}") from exc
        movies = MovieColumns(
            _values(ids, "movies.dat movie id"),
            _values(pc.list_element(parts, 1), "movies.dat title"),
            _genres(_values(pc.list_element(parts, 2), "movies.dat genres")),
        )
    if (path := _optional(others, "users.dat")) is not None:
        table = _read_csv(
            files, path, {"f0": int64, "f4": float32}, sep=":", header=False, quoted=False
        )
        watchers = WatcherColumns(
            _values(table["f0"], "users.dat user id"),
            _values(table["f4"], "users.dat age", np.nan),
        )
    return DatasetColumns(columns, movies, watchers)


def _movielens(files: _Files, ratings: Path, *others: Path) -> DatasetColumns:
    int32, int64, float32, string = _types("int32", "int64", "float32", "string")
    names = ("userId", "movieId", "rating", "timestamp")
    table = _read_csv(
        files,
        ratings,
        dict(zip(names, (int64, int32, float32, int64), strict=True)),
        sep=",",
        header=True,
    )
    columns = _rating_columns(table, names, "ratings.csv")
    movies = None
    if (path := _optional(others, "movies.csv")) is not None:
        table = _read_csv(
            files,
            path,
            {"movieId": int32, "title": string, "genres": string},
            sep=",",
            header=True,
            decode=True,
        )
        movies = MovieColumns(
            _values(table["movieId"], "movies.csv movieId"),
            _values(table["title"], "movies.csv title", ""),
            _genres(_values(table["genres"], "movies.csv genres", "")),
        )
    return DatasetColumns(columns, movies)


def _types(*names: str) -> list[Any]:
    pa = _arrow()[0]
    return [getattr(pa, n)() for n in names]


def _rating_columns(table: Any, names: Sequence[str], where: str) -> RatingColumns:
    """Ratings from (watcher, movie, rating[, timestamp]) columns of a Table."""
    values = [_values(table[n], f"{where} column {n!r}") for n in names]
    return RatingColumns(*values)


# --- any table ---------------------------------------------------------------------------------


def read_table(
    ratings: str | Path,
    *,
    watcher_col: Column,
    movie_col: Column,
    rating_col: Column,
    timestamp_col: Column | None = None,
    movies: str | Path | None = None,
    movie_id_col: Column | None = None,
    title_col: Column | None = None,
    genres_col: Column | None = None,
    watchers: str | Path | None = None,
    watcher_id_col: Column | None = None,
    age_col: Column | None = None,
    education_col: Column | None = None,
    sep: str | None = None,
    progress: Progress | None = None,
) -> DatasetColumns:
    """Ratings (and optionally a catalogue and watcher features) from CSV, TSV or Parquet
    files, by column.

    A column is a header name, or for a file without a header its 0-based position (an int
    or a string of digits). Parquet files are told by their suffix (.parquet, .pq); the
    separator of the others is `sep`, else ',' for .csv, tab for .tsv/.tab, else guessed
    from the first lines. The catalogue's id column is `movie_id_col` (default:
    `movie_col`), the watchers' `watcher_id_col` (default: `watcher_col`). A missing age or
    education is NaN (unknown), a missing title or genres "" ; a missing id, rating or
    timestamp is an error. Genres are "A|B|C". `progress(bytes_read, total_bytes)` is called
    as the files are read.
    """
    int32, int64, float32, string = _types("int32", "int64", "float32", "string")
    paths = [Path(p) for p in (ratings, movies, watchers) if p is not None]
    files = _Files(paths, progress)
    roles = [(watcher_col, int64), (movie_col, int32), (rating_col, float32)]
    if timestamp_col is not None:
        roles.append((timestamp_col, int64))
    table = _table(files, Path(ratings), dict(roles), sep)
    rating_columns = RatingColumns(*(_values(table[str(c)], _label(ratings, c)) for c, _ in roles))
    movie_columns = watcher_columns = None
    if movies is not None:
        movie_id = movie_col if movie_id_col is None else movie_id_col
        features = {c: string for c in (title_col, genres_col) if c is not None}
        table = _table(files, Path(movies), {movie_id: int32, **features}, sep, decode=True)
        movie_columns = MovieColumns(
            _values(table[str(movie_id)], _label(movies, movie_id)),
            *(
                None if c is None else _values(table[str(c)], _label(movies, c), "")
                for c in (title_col, genres_col)
            ),
        )
    if watchers is not None:
        watcher_id = watcher_col if watcher_id_col is None else watcher_id_col
        features = {c: float32 for c in (age_col, education_col) if c is not None}
        table = _table(files, Path(watchers), {watcher_id: int64, **features}, sep)
        watcher_columns = WatcherColumns(
            _values(table[str(watcher_id)], _label(watchers, watcher_id)),
            *(
                None if c is None else _values(table[str(c)], _label(watchers, c), np.nan)
                for c in (age_col, education_col)
            ),
        )
    return DatasetColumns(rating_columns, movie_columns, watcher_columns)


def _label(path: str | Path, column: Column) -> str:
    return f"{Path(path).name} column {column!r}"


def _by_position(path: Path, columns: Sequence[Column]) -> bool:
    """Whether `columns` are positions (the file has no header) rather than header names."""
    kinds = {isinstance(c, int) or c.isdigit() for c in columns}
    if len(kinds) > 1:
        raise ValueError(
            f"{path}: name its columns {list(columns)} all by header name or all by "
            "0-based position (for a file without a header), not both"
        )
    return kinds == {True}


def _table(
    files: _Files, path: Path, wanted: Mapping[Column, Any], sep: str | None, decode: bool = False
) -> dict[str, Any]:
    """The `wanted` columns of one file (name or position -> pyarrow type), by str(column)."""
    pa, _, _, pq = _arrow()
    headerless = _by_position(path, list(wanted))
    if path.suffix.lower() in _PARQUET:
        if headerless:
            raise ValueError(f"{path}: Parquet columns are named, not numbered")
        _check_columns(path, [str(c) for c in wanted], pq.read_schema(path).names)
        with files.open(path, decode=False) as (source, _):
            table = pq.read_table(source, columns=[str(c) for c in wanted])
        try:
            return {str(c): _cast(table[str(c)], t) for c, t in wanted.items()}
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{path}: {exc}") from exc
    sep = sep or _SEPARATORS.get(path.suffix.lower()) or _sniff(path)
    first = _first_row(path, sep)
    if headerless:
        # pyarrow names the columns of a file without a header f0, f1, ...
        _check_columns(path, [str(int(c)) for c in wanted], [str(i) for i in range(len(first))])
        names = {str(c): f"f{int(c)}" for c in wanted}
    else:
        _check_columns(path, [str(c) for c in wanted], first)
        names = {str(c): str(c) for c in wanted}
    types = {names[str(c)]: t for c, t in wanted.items()}
    table = _read_csv(files, path, types, sep=sep, header=not headerless, decode=decode)
    return {c: table[name] for c, name in names.items()}


def _cast(column: Any, to: Any) -> Any:
    """A Parquet column as `to`; a timestamp becomes Unix seconds, whatever its unit."""
    pa = _arrow()[0]
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp("s"), safe=False)
    return column.cast(to)


def _check_columns(path: Path, wanted: Sequence[str], found: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in found]
    if missing:
        raise ValueError(f"{path} has no column {missing[0]!r}; it has {list(found)}")


def _first_row(path: Path, sep: str) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as file:
        return next(csv.reader(file, delimiter=sep), [])


def _sniff(path: Path) -> str:
    """The separator of a delimited file whose suffix does not tell it, from its first lines."""
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        sample = "".join(file.readline() for _ in range(20))
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error as exc:
        raise ValueError(f"{path}: cannot tell its separator; give sep=") from exc
