"""Ratings, catalogues and watcher features from MovieLens directories and CSV, TSV or Parquet
files, as numpy columns to import; parsed by pyarrow (the `data` extra), loaded on first use.
A refusal names the file, the line and the column, whether the reader or the server refuses."""

from __future__ import annotations

import csv
import errno
import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import _convert
from .types import DatasetColumns, MovieColumns, RatingColumns, WatcherColumns

__all__ = [
    "FORMATS",
    "DatasetColumns",
    "FileColumns",
    "FileError",
    "MovieColumns",
    "Progress",
    "RatingColumns",
    "TableSource",
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
# What each column holds, as refusals say it.
_ROLES = {
    "watcher_ids": "watcher id",
    "movie_ids": "movie id",
    "ratings": "rating",
    "timestamps": "timestamp",
    "titles": "title",
    "genres": "genres",
    "age_years": "age",
    "education": "education level",
}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")

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


# --- where a row came from -------------------------------------------------------------------


class FileError(ValueError):
    """A data file the readers refuse, in the file's terms: `path`; where one row is at fault,
    its `line` (1-based; a Parquet file's row) and `column` (its header name, or its 0-based
    position in a file without a header); and the `problem`. `positions`: for a file whose
    first line looks like data, not a header, read_table's column arguments that would read
    it by position (an example, in the usual order)."""

    def __init__(
        self,
        where: str,
        problem: str,
        *,
        path: Path,
        line: int | None = None,
        column: Column | None = None,
        positions: Mapping[str, int] | None = None,
    ) -> None:
        self.where = where
        self.problem = problem
        self.path = path
        self.line = line
        self.column = column
        self.positions = dict(positions or {})
        super().__init__(self.describe())

    def describe(
        self, argument: Callable[[str, int], str] = "{}={}".format, between: str = ", "
    ) -> str:
        """The message; `argument(name, position)` writes each of `positions`, `between` them
        (a command line writes its flags)."""
        text = f"{self.where}: {self.problem}"
        if self.positions:
            example = between.join(argument(name, i) for name, i in self.positions.items())
            text += f"; if it has no header, give its columns by 0-based position: {example}"
        return text


@dataclass(frozen=True)
class TableSource:
    """The file one table was read from: row i of the table is the file's data row i.

    `names`: each column of the table (movie_ids, titles, ...) as the file names it, a header
    name or a 0-based position; `header`: the lines before the first row (1 or 0); `parquet`:
    a Parquet file, whose rows are counted, not its lines."""

    path: Path
    names: Mapping[str, Column]
    header: int = 1
    parquet: bool = False

    def line(self, row: int) -> int:
        """The 1-based line of data row `row` (0-based), or a Parquet file's row number."""
        if self.parquet:
            return row + 1
        return _line_of(self.path, self.header + row)

    def where(self, row: int | None = None, column: str | None = None) -> str:
        """ "ratings.csv, line 3, column 'movieId'": the file, the row's line and the column."""
        return self._where(None if row is None else self.line(row), column)

    def _where(self, line: int | None, column: str | None) -> str:
        text = str(self.path)
        if line is not None:
            text += f", {'row' if self.parquet else 'line'} {line}"
        if column is not None:
            text += f", column {_shown(self.names.get(column, column))}"
        return text

    def error(
        self,
        problem: str,
        row: int | None = None,
        column: str | None = None,
        positions: Mapping[str, int] | None = None,
    ) -> FileError:
        line = None if row is None else self.line(row)
        return FileError(
            self._where(line, column),
            problem,
            path=self.path,
            line=line,
            column=None if column is None else self.names.get(column, column),
            positions=positions,
        )


def _line_of(path: Path, index: int) -> int:
    """The 1-based number of the `index`-th (0-based) line of a file that is not blank:
    pyarrow counts rows without the blank lines it skips, people count lines with them. A
    pass over the file, made only to name a line in a refusal."""
    seen = -1
    with path.open("rb") as file:
        for number, text in enumerate(file, start=1):
            if text.strip(b"\r\n"):
                seen += 1
                if seen == index:
                    return number
    return index + 1  # the file has changed since: the count as pyarrow made it


@dataclass(frozen=True, eq=False)
class FileColumns(DatasetColumns):
    """DatasetColumns read from files, which keep each table's source ("ratings", "movies",
    "watchers") to name a refused row by its file, line and column."""

    sources: Mapping[str, TableSource] = field(default_factory=dict)

    def where(self, table: str, row: int, column: str | None = None) -> str:
        """The file, line and column of row `row` of `table` ("ratings", ...)."""
        source = self.sources.get(table)
        if source is None:
            return f"{table} row {row}" + ("" if column is None else f", column {column!r}")
        return source.where(row, column)

    def in_file_terms(self, text: str, chunk_rows: int) -> str:
        """An ImportDataset refusal of these columns (sent `chunk_rows` rows a message) with
        each stream position it names (chunks[1].ratings.movie_ids[1]) told as the file, the
        line and the column that row came from."""
        return _convert.in_table_terms(text, self, chunk_rows, self.where)


# --- reading -----------------------------------------------------------------------------------


def _decoded(path: Path) -> bytes:
    """A small text file as UTF-8, decoded from Latin-1 when it is not valid UTF-8 (ML-100k's
    u.item, ML-1M's movies.dat)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        data = data.decode("latin-1").encode("utf-8")
    return data


@contextmanager
def _opened(path: Path, decode: bool) -> Iterator[Any]:
    """A source for pyarrow: `decode`, a small text file read whole (see _decoded); else the
    file streamed as it is (UTF-8; numbers only, in the big ratings files)."""
    if decode:
        yield _arrow()[0].BufferReader(_decoded(path))
    else:
        with path.open("rb") as file:
            yield file


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
        """A source for pyarrow (see _opened) and a function that reports how far it has been
        read."""
        start = self.done
        with _opened(path, decode) as source:
            yield source, (lambda: None) if decode else lambda: self._report(start + source.tell())
        self.done = start + path.stat().st_size
        self._report(self.done)


def _blank(path: Path) -> bool:
    """Whether a file has no line but blank ones (it stops at the first that is not)."""
    with path.open("rb") as file:
        return not any(line.strip(b"\r\n") for line in file)


def _read_csv(
    files: _Files,
    source: TableSource,
    types: Mapping[str, tuple[str, Any]],
    *,
    sep: str,
    quoted: bool = True,
    decode: bool = False,
    layout: str | None = None,
) -> dict[str, Any]:
    """Columns of a delimited file as pyarrow arrays, by the table's column names: `types`
    gives each one's pyarrow column (a header name, or f0, f1, ... without a header) and type.
    `layout`: what each line of a file without a header holds, for a refusal to say."""
    pa, pcsv, _, _ = _arrow()
    invalid: list[Any] = []

    def refuse(row: Any) -> str:  # pyarrow's InvalidRow: its text, and its number when known
        invalid.append(row)
        return "error"

    # One thread: pyarrow then numbers an invalid row (no slower on 3M rows on 2 cores).
    read = pcsv.ReadOptions(
        block_size=_BLOCK_BYTES, autogenerate_column_names=not source.header, use_threads=False
    )
    parse = pcsv.ParseOptions(
        delimiter=sep, quote_char='"' if quoted else False, invalid_row_handler=refuse
    )
    # Explicit types: the streaming reader would otherwise guess them from the first block
    # and fail on a later "3.5" in a column that began with whole numbers.
    convert = pcsv.ConvertOptions(
        include_columns=[key for key, _ in types.values()], column_types=dict(types.values())
    )
    with files.open(source.path, decode) as (stream, report):
        try:
            reader = pcsv.open_csv(
                stream, read_options=read, parse_options=parse, convert_options=convert
            )
            batches = []
            for batch in reader:
                batches.append(batch)
                report()
        except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
            refusal = _csv_refusal(source, types, exc, invalid, layout)
            raise (refusal or _first_refused(source, types, read, parse, decode, exc)) from exc
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return {column: table[key] for column, (key, _) in types.items()}


def _csv_refusal(
    source: TableSource,
    types: Mapping[str, tuple[str, Any]],
    exc: Exception,
    invalid: Sequence[Any],
    layout: str | None,
) -> FileError | None:
    """A line pyarrow could not split into the expected fields, or a file without the fields
    its layout needs; None for a value it could not convert."""
    pa = _arrow()[0]
    if invalid:
        row = invalid[0]
        got = (
            f"is not {layout}"
            if layout
            else f"has {row.actual_columns} fields where the first line has {row.expected_columns}"
        )
        at = None if row.number is None else row.number - 1 - source.header
        return source.error(f"{got}: {row.text!r}", at)
    if isinstance(exc, pa.ArrowKeyError):  # a field past the end of every line
        return source.error(f"its lines are not {layout}" if layout else str(exc))
    return None


def _first_refused(
    source: TableSource,
    types: Mapping[str, tuple[str, Any]],
    read: Any,
    parse: Any,
    decode: bool,
    exc: Exception,
) -> FileError:
    """The first value pyarrow could not convert, found by reading the file again as text
    (only after a refusal) and converting each block of it as the typed read did."""
    pa, pcsv, pc, _ = _arrow()
    # The same values are missing as in the typed read ("", "NA", ...).
    text = pcsv.ConvertOptions(
        include_columns=[key for key, _ in types.values()],
        column_types={key: pa.string() for key, _ in types.values()},
        strings_can_be_null=True,
    )
    offset = 0
    with _opened(source.path, decode) as stream:
        for batch in pcsv.open_csv(
            stream, read_options=read, parse_options=parse, convert_options=text
        ):
            found = []
            for column, (key, to) in types.items():
                # Trimmed: the typed read takes " 4" for 4.
                values = pc.utf8_trim_whitespace(batch.column(key))
                row = _first_failing(values, functools.partial(pc.cast, target_type=to))
                if row is not None:
                    found.append((row, column, batch.column(key)[row].as_py(), to))
            if found:
                row, column, value, to = min(found, key=lambda f: f[0])
                problem = _refused(value, column, to)
                if offset + row == 0 and all(isinstance(n, int) for n in source.names.values()):
                    problem += "; if line 1 is a header, name the columns by it, not by position"
                return source.error(problem, offset + row, column)
            offset += batch.num_rows
    return source.error(str(exc))


def _first_failing(values: Any, convert: Callable[[Any], Any]) -> int | None:
    """The first row of a pyarrow array that `convert` refuses, by halving; None if none."""
    pa = _arrow()[0]
    try:
        convert(values)
        return None
    except pa.ArrowInvalid:
        pass
    low, high = 0, len(values)  # the first refused row is in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        try:
            convert(values.slice(low, middle - low))
            low = middle
        except pa.ArrowInvalid:
            high = middle
    return low


def _refused(value: Any, column: str, to: Any) -> str:
    """Why `value` cannot be a `column` value of pyarrow type `to`, and what to do."""
    role = _ROLES.get(column, column)
    pa = _arrow()[0]
    text = str(value).strip()
    if pa.types.is_integer(to) and _INTEGER.fullmatch(text):  # a whole number, out of range
        bounds = np.iinfo(to.to_pandas_dtype())
        most = f"at most {bounds.max}" if int(text) > bounds.max else f"at least {bounds.min}"
        return f"{role}s must be {most}, got {text}"
    if column in ("watcher_ids", "movie_ids"):
        return (
            f"{role}s must be integers, got {value!r}: give a column of integer ids, or "
            "number the ids first (one integer per distinct id, the same in every file)"
        )
    if column == "timestamps":
        return f"timestamps must be whole Unix seconds, got {value!r}"
    if pa.types.is_integer(to):
        return f"{role}s must be whole numbers, got {value!r}"
    return f"{role}s must be numbers, got {value!r}"


def _values(
    source: TableSource, table: Mapping[str, Any], column: str, fill: Any = None
) -> np.ndarray:
    """A column as numpy; a missing value is an error unless `fill` replaces it."""
    pc = _arrow()[2]
    values = table[column]
    if values.null_count:
        if fill is None:
            row = pc.index(pc.is_null(values), True).as_py()
            role = _ROLES.get(column, column)
            raise source.error(f"no value, but every row needs a {role}", row, column)
        values = values.fill_null(fill)
    return values.to_numpy()


def _ratings(source: TableSource, table: Mapping[str, Any]) -> RatingColumns:
    """Ratings from a table's watcher_ids, movie_ids, ratings[, timestamps]; a file with a
    header and no rows has none, and is refused."""
    if not len(table["watcher_ids"]):
        raise source.error("no ratings: the file has its header line only")
    return RatingColumns(*(_values(source, table, column) for column in table))


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
) -> FileColumns:
    """A MovieLens directory's ratings, titles and genres, and ages where it has them.

    `format`: "auto" (recognised by the files), "movielens-100k" (u.data, u.item in
    Latin-1 with 19 genre flags, u.user with ages), "movielens-1m" (`::`-separated
    ratings.dat, movies.dat in Latin-1 (1M) or UTF-8 (10M), users.dat whose ages are 1M's
    bracket codes 1/18/25/35/45/50/56, kept as they are) or "movielens" (ratings.csv and
    movies.csv with quoted titles). MovieLens has no education. `progress(bytes_read,
    total_bytes)` is called as the files are read. A file that cannot be read raises
    FileError, naming its line and column.
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
    if not ratings.is_file():
        has = f" (it has no {ratings.name})" if directory.is_dir() else ""
        raise FileNotFoundError(errno.ENOENT, f"not a {format} directory{has}", str(directory))
    present = [ratings, *(p for p in others if p.is_file())]  # catalogue, users: optional
    return readers[format](_Files(present, progress), *present)


def _optional(paths: Sequence[Path], name: str) -> Path | None:
    return next((p for p in paths if p.name == name), None)


class _Want(NamedTuple):
    """A column read_table is asked for: the table's column it fills, how the caller named it
    (a header name or a 0-based position), the argument that named it ("": none, as in a
    MovieLens file), and its type."""

    column: str
    at: Column | None  # None: not wanted
    argument: str
    type: Any


class _Field(NamedTuple):
    """A column of a MovieLens file: the table's column it fills, pyarrow's column for it
    (f0, f1, ... without a header) and its name in MovieLens's README, and its type."""

    column: str
    key: str
    name: str
    type: Any


def _movielens_table(
    files: _Files,
    path: Path,
    fields: Sequence[_Field],
    *,
    sep: str,
    decode: bool = False,
    layout: str | None = None,
) -> tuple[TableSource, dict[str, Any]]:
    """The fields of one MovieLens file without a header, and where they came from."""
    source = TableSource(path, {f.column: f.name for f in fields}, header=0)
    if _blank(path):
        raise source.error("the file is empty")
    types = {f.column: (f.key, f.type) for f in fields}
    table = _read_csv(files, source, types, sep=sep, quoted=False, decode=decode, layout=layout)
    return source, table


def _movielens_ratings(
    files: _Files, path: Path, keys: Sequence[str], names: Sequence[str], sep: str
) -> tuple[TableSource, RatingColumns]:
    """A MovieLens ratings file's watcher, movie, rating and timestamp fields: pyarrow's
    `keys` for them (f0, f1, ...) and the `names` MovieLens's README gives them."""
    int32, int64, float32 = _types("int32", "int64", "float32")
    columns = ("watcher_ids", "movie_ids", "ratings", "timestamps")
    types = (int64, int32, float32, int64)
    fields = [_Field(*f) for f in zip(columns, keys, names, types, strict=True)]
    layout = "::".join(names) if sep == ":" else ", ".join(names) + " separated by tabs"
    source, table = _movielens_table(files, path, fields, sep=sep, layout=layout)
    return source, _ratings(source, table)


def _movielens_watchers(
    files: _Files, path: Path, ids: tuple[str, str], ages: tuple[str, str], sep: str, layout: str
) -> tuple[TableSource, WatcherColumns]:
    """A MovieLens users file's ids and ages: each one's key (f0, f1, ...) and README name."""
    int64, float32 = _types("int64", "float32")
    fields = [_Field("watcher_ids", *ids, int64), _Field("age_years", *ages, float32)]
    source, table = _movielens_table(files, path, fields, sep=sep, layout=layout)
    ages_read = _values(source, table, "age_years", np.nan)
    return source, WatcherColumns(_values(source, table, "watcher_ids"), ages_read)


def _movielens_100k(files: _Files, ratings: Path, *others: Path) -> FileColumns:
    int8, int32, string = _types("int8", "int32", "string")
    # The fields as ML-100k's README names them.
    names = ("user id", "item id", "rating", "timestamp")
    source, columns = _movielens_ratings(files, ratings, ("f0", "f1", "f2", "f3"), names, "\t")
    sources = {"ratings": source}
    movies = watchers = None
    if (item := _optional(others, "u.item")) is not None:
        flags = [_Field(g, f"f{5 + i}", g, int8) for i, g in enumerate(GENRES_100K)]
        source, table = _movielens_table(
            files,
            item,
            [
                _Field("movie_ids", "f0", "movie id", int32),
                _Field("titles", "f1", "movie title", string),
                *flags,
            ],
            sep="|",
            decode=True,
            layout="movie id|movie title|release date|video release date|IMDb URL|"
            "and 19 genre flags",
        )
        on = np.column_stack([_values(source, table, f.column) for f in flags]) > 0
        genres = ["|".join(g for g, yes in zip(GENRES_100K, row, strict=True) if yes) for row in on]
        movies = MovieColumns(
            _values(source, table, "movie_ids"),
            _values(source, table, "titles", ""),
            _genres(np.array(genres, dtype=object)),
        )
        sources["movies"] = TableSource(item, {**source.names, "genres": "genre flags"}, 0)
    if (user := _optional(others, "u.user")) is not None:
        layout = "user id|age|gender|occupation|zip code"
        ids, ages = ("f0", "user id"), ("f1", "age")
        sources["watchers"], watchers = _movielens_watchers(files, user, ids, ages, "|", layout)
    return FileColumns(columns, movies, watchers, sources=sources)


def _movielens_1m(files: _Files, ratings: Path, *others: Path) -> FileColumns:
    pc = _arrow()[2]
    int32, string = _types("int32", "string")
    # Every field of ratings.dat and users.dat is free of ':', so "::" reads as ':' with an
    # empty field between each two (f1, f3, ...), which pyarrow's CSV reader parses at speed.
    names = ("UserID", "MovieID", "Rating", "Timestamp")
    source, columns = _movielens_ratings(files, ratings, ("f0", "f2", "f4", "f6"), names, ":")
    sources = {"ratings": source}
    movies = watchers = None
    if (path := _optional(others, "movies.dat")) is not None:
        # Titles hold ':' ("Star Wars: Episode IV ..."): split whole lines on "::" instead.
        line = _Field("line", "f0", "line", string)
        table = _movielens_table(files, path, [line], sep="\x1f", decode=True)[1]
        names_of = {"movie_ids": "MovieID", "titles": "Title", "genres": "Genres"}
        source = TableSource(path, names_of, header=0)
        parts = pc.split_pattern(table["line"], "::", max_splits=2)
        short = pc.less(pc.list_value_length(parts), 3)
        if pc.any(short).as_py():
            raise source.error("is not MovieID::Title::Genres", pc.index(short, True).as_py())
        ids = pc.list_element(parts, 0)
        row = _first_failing(ids, lambda v: pc.cast(v, int32))
        if row is not None:
            value = ids[row].as_py()
            raise source.error(_refused(value, "movie_ids", int32), row, "movie_ids")
        fields = {
            "movie_ids": pc.cast(ids, int32),
            "titles": pc.list_element(parts, 1),
            "genres": pc.list_element(parts, 2),
        }
        movies = MovieColumns(
            _values(source, fields, "movie_ids"),
            _values(source, fields, "titles"),
            _genres(_values(source, fields, "genres")),
        )
        sources["movies"] = source
    if (path := _optional(others, "users.dat")) is not None:
        layout = "UserID::Gender::Age::Occupation::Zip-code"
        ids, ages = ("f0", "UserID"), ("f4", "Age")
        sources["watchers"], watchers = _movielens_watchers(files, path, ids, ages, ":", layout)
    return FileColumns(columns, movies, watchers, sources=sources)


def _movielens(files: _Files, ratings: Path, *others: Path) -> FileColumns:
    int32, int64, float32, string = _types("int32", "int64", "float32", "string")
    wanted = [
        _Want("watcher_ids", "userId", "", int64),
        _Want("movie_ids", "movieId", "", int32),
        _Want("ratings", "rating", "", float32),
        _Want("timestamps", "timestamp", "", int64),
    ]
    source, table = _table(files, ratings, wanted, ",")
    sources = {"ratings": source}
    columns = _ratings(source, table)
    movies = None
    if (path := _optional(others, "movies.csv")) is not None:
        wanted = [
            _Want("movie_ids", "movieId", "", int32),
            _Want("titles", "title", "", string),
            _Want("genres", "genres", "", string),
        ]
        source, table = _table(files, path, wanted, ",", decode=True)
        movies = MovieColumns(
            _values(source, table, "movie_ids"),
            _values(source, table, "titles", ""),
            _genres(_values(source, table, "genres", "")),
        )
        sources["movies"] = source
    return FileColumns(columns, movies, sources=sources)


def _types(*names: str) -> list[Any]:
    pa = _arrow()[0]
    return [getattr(pa, n)() for n in names]


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
) -> FileColumns:
    """Ratings (and optionally a catalogue and watcher features) from CSV, TSV or Parquet
    files, by column.

    A column is a header name, or for a file without a header its 0-based position (an int
    or a string of digits). Parquet files are told by their suffix (.parquet, .pq); the
    separator of the others is `sep`, else ',' for .csv, tab for .tsv/.tab, else guessed
    from the first lines. The catalogue's id column is `movie_id_col` (default:
    `movie_col`), the watchers' `watcher_id_col` (default: `watcher_col`). A missing age or
    education is NaN (unknown), a missing title or genres "" ; a missing id, rating or
    timestamp is an error. Genres are "A|B|C". `progress(bytes_read, total_bytes)` is called
    as the files are read. A file that cannot be read raises FileError, naming its line and
    column.
    """
    int32, int64, float32, string = _types("int32", "int64", "float32", "string")
    paths = [Path(p) for p in (ratings, movies, watchers) if p is not None]
    files = _Files(paths, progress)
    wanted = [
        _Want("watcher_ids", watcher_col, "watcher_col", int64),
        _Want("movie_ids", movie_col, "movie_col", int32),
        _Want("ratings", rating_col, "rating_col", float32),
        _Want("timestamps", timestamp_col, "timestamp_col", int64),
    ]
    source, table = _table(files, Path(ratings), wanted, sep)
    sources = {"ratings": source}
    rating_columns = _ratings(source, table)
    movie_columns = watcher_columns = None
    if movies is not None:
        movie_id = movie_col if movie_id_col is None else movie_id_col
        wanted = [
            _Want("movie_ids", movie_id, "movie_id_col", int32),
            _Want("titles", title_col, "title_col", string),
            _Want("genres", genres_col, "genres_col", string),
        ]
        source, table = _table(files, Path(movies), wanted, sep, decode=True)
        movie_columns = MovieColumns(
            _values(source, table, "movie_ids"),
            *(_values(source, table, c, "") if c in table else None for c in ("titles", "genres")),
        )
        sources["movies"] = source
    if watchers is not None:
        watcher_id = watcher_col if watcher_id_col is None else watcher_id_col
        wanted = [
            _Want("watcher_ids", watcher_id, "watcher_id_col", int64),
            _Want("age_years", age_col, "age_col", float32),
            _Want("education", education_col, "education_col", float32),
        ]
        source, table = _table(files, Path(watchers), wanted, sep)
        features = {
            c: _values(source, table, c, np.nan) for c in ("age_years", "education") if c in table
        }
        if "education" in features:
            _whole(source, features["education"])
        watcher_columns = WatcherColumns(
            _values(source, table, "watcher_ids"),
            features.get("age_years"),
            features.get("education"),
        )
        sources["watchers"] = source
    return FileColumns(rating_columns, movie_columns, watcher_columns, sources=sources)


def _whole(source: TableSource, education: np.ndarray) -> None:
    """Education levels, where known, are whole numbers (int32 on the wire)."""
    bounds = np.iinfo(np.int32)
    known = ~np.isnan(education)
    bad = known & (
        (education != np.round(education)) | (education < bounds.min) | (education > bounds.max)
    )
    if bad.any():
        row = int(np.argmax(bad))
        raise source.error(
            f"education levels must be whole numbers, got {education[row]:g}", row, "education"
        )


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
    files: _Files, path: Path, wanted: Sequence[_Want], sep: str | None, decode: bool = False
) -> tuple[TableSource, dict[str, Any]]:
    """The `wanted` columns of one file (a None `at`: not wanted), by the table's column
    names, and where they came from."""
    pq = _arrow()[3]
    given = {w.column: w.at for w in wanted if w.at is not None}
    types = {w.column: w.type for w in wanted if w.column in given}
    headerless = _by_position(path, list(given.values()))
    names: dict[str, Column] = {c: int(at) if headerless else str(at) for c, at in given.items()}
    parquet = path.suffix.lower() in _PARQUET
    source = TableSource(path, names, header=int(not (headerless or parquet)), parquet=parquet)
    if parquet:
        if headerless:
            raise source.error("Parquet columns are named, not numbered")
        if not path.stat().st_size:
            raise source.error("the file is empty")
        found = pq.read_schema(path).names
        _check_columns(source, found, f"it has {found}")
        with files.open(path, decode=False) as (stream, _):
            table = pq.read_table(stream, columns=list(names.values()))
        return source, {c: _cast(source, table[names[c]], c, t) for c, t in types.items()}
    sep = sep or _SEPARATORS.get(path.suffix.lower()) or _sniff(path)
    first = _first_row(path, sep)
    if not first:
        raise source.error("the file is empty")
    if headerless:
        count = len(first)
        says = f"its first line has {count} fields (0..{count - 1})"
        _check_columns(source, range(count), says)
        keys = {c: f"f{n}" for c, n in names.items()}  # pyarrow's names without a header
    else:
        says, positions = f"its header has {first}", None
        if any(_NUMBER.fullmatch(field.strip()) for field in first):
            says = f"its first line, {sep.join(first)!r}, looks like data, not a header"
            arguments = [w.argument for w in wanted if w.column in given]
            if all(arguments):
                positions = {a: i for i, a in enumerate(arguments) if i < len(first)}
        _check_columns(source, first, says, positions)
        keys = {c: str(n) for c, n in names.items()}
    return source, _read_csv(
        files, source, {c: (keys[c], t) for c, t in types.items()}, sep=sep, decode=decode
    )


def _cast(source: TableSource, values: Any, column: str, to: Any) -> Any:
    """A Parquet column as `to`; a timestamp becomes Unix seconds, whatever its unit."""
    pa = _arrow()[0]

    def cast(values: Any) -> Any:
        if pa.types.is_timestamp(values.type):
            values = values.cast(pa.timestamp("s"), safe=False)
        return values.cast(to)

    row = _first_failing(values, cast)
    if row is not None:
        value = values[row].as_py()
        raise source.error(_refused(value, column, to), row, column)
    return cast(values)


def _check_columns(
    source: TableSource, found: Any, says: str, positions: Mapping[str, int] | None = None
) -> None:
    """Every column the source names is among those `found`; `says` which those are."""
    missing = [n for n in source.names.values() if n not in found]
    if missing:
        raise source.error(f"no column {_shown(missing[0])}; {says}", positions=positions)


def _shown(column: Column) -> str:
    return repr(column) if isinstance(column, str) else str(column)


def _first_row(path: Path, sep: str) -> list[str]:
    """The first line that is not blank, split into fields."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as file:
        return next((row for row in csv.reader(file, delimiter=sep) if row), [])


def _sniff(path: Path) -> str:
    """The separator of a delimited file whose suffix does not tell it, from its first lines."""
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        sample = "".join(file.readline() for _ in range(20))
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error as exc:
        raise ValueError(f"{path}: cannot tell its separator; give sep=") from exc
