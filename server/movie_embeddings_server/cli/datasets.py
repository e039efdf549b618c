"""`import` and `datasets`: bring ratings files to the server as datasets, list and delete them."""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

import movie_embeddings as me

from .common import (
    UsageError,
    client_command,
    dest,
    eprint,
    nonnegative_int,
    print_json,
    stderr_console,
)


def _size(num_bytes: float) -> str:
    """Bytes as people read them: 512 B, 3.4 MB."""
    units = ["B", "kB", "MB", "GB"]
    while num_bytes >= 1000 and len(units) > 1:
        num_bytes /= 1000
        units.pop(0)
    return f"{num_bytes:.0f} B" if units[0] == "B" else f"{num_bytes:.1f} {units[0]}"


def describe_dataset(info: me.DatasetInfo) -> str:
    """One line: the version, its counts, rating range, watcher features and size on disk."""
    features = [f for f, has in (("age", info.has_age), ("education", info.has_education)) if has]
    merged = (
        f", {info.num_duplicate_ratings:,} repeated ratings merged (the last kept)"
        if info.num_duplicate_ratings
        else ""
    )
    dropped = (
        f", {info.num_dropped_watchers:,} watchers without ratings dropped"
        if info.num_dropped_watchers
        else ""
    )
    about = f"  {info.description}" if info.description else ""
    return (
        f"{info.name} v{info.version}  created {info.create_time:%Y-%m-%d %H:%M:%S}Z  "
        f"{info.num_ratings:,} ratings ({info.min_rating:g}..{info.max_rating:g}) by "
        f"{info.num_watchers:,} watchers of {info.num_movies:,} movies "
        f"({info.num_titled_movies:,} titled), watcher features: "
        f"{', '.join(features) or 'none'}{merged}{dropped}, "
        f"{_size(info.size_bytes)} on disk{about}"
    )


def cmd_datasets(client: me.Client, args: argparse.Namespace) -> None:
    words = args.words
    if words and words[0] == "delete":
        if len(words) != 2:
            raise UsageError("datasets delete: give one NAME")
        deleted = client.delete_dataset(words[1], args.version)
        if args.json:
            print_json(deleted)
            return
        for info in deleted:
            print(f"deleted {info.name} v{info.version}")
        return
    if len(words) > 1:
        raise UsageError(f"datasets: one NAME at most, got {' '.join(words)}")
    found = client.list_datasets(words[0] if words else "")
    found = [info for info in found if args.version in (0, info.version)]
    if args.json:
        print_json(found)
        return
    if not found:
        print("no datasets")
    for info in found:
        print(describe_dataset(info))


ReadProgress = Callable[[int, int], None]  # (bytes read, bytes of every file)
SendProgress = Callable[[int, int], None]  # (rows sent, rows in all)


class ImportDisplay(NamedTuple):
    read: ReadProgress
    send: SendProgress
    say: Callable[[str], None]  # a line above the bars


def _tenths() -> SendProgress:
    """A plain line each time another tenth of the rows has gone (for logs and pipes)."""
    shown = [0]

    def line(sent: int, total: int) -> None:
        tenth = 10 * sent // max(total, 1)
        if tenth > shown[0]:
            shown[0] = tenth
            eprint(f"sent {sent:,}/{total:,} rows ({10 * tenth}%)")

    return line


@contextmanager
def import_display() -> Iterator[ImportDisplay]:
    """Progress callbacks for reading the files (by bytes) and sending the rows (by rows):
    live bars on a terminal, else a line per tenth of the rows sent."""
    console = stderr_console()
    if not console.is_terminal:
        yield ImportDisplay(lambda done, total: None, _tenths(), eprint)
        return
    columns = (
        TextColumn("{task.description:<8}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bars:
        reading = bars.add_task("reading", total=None, count="")
        sending = bars.add_task("sending", total=None, count="", start=False, visible=False)

        def read(done: int, total: int) -> None:
            bars.update(reading, completed=done, total=total, count=f"{_size(done)}/{_size(total)}")

        def send(sent: int, total: int) -> None:
            bars.start_task(sending)  # its clock starts with the first rows sent
            count = f"{sent:,}/{total:,} rows"
            bars.update(sending, completed=sent, total=total, count=count, visible=True)

        yield ImportDisplay(
            read, send, lambda text: bars.console.print(text, markup=False, soft_wrap=True)
        )


# Columns of a table file: flag -> read_table's default when not given (MovieLens's names).
TABLE_OPTIONS = {
    "--watcher-col": ("userId", "ratings column of the watcher ids"),
    "--movie-col": ("movieId", "ratings column of the movie ids"),
    "--rating-col": ("rating", "ratings column of the ratings (any finite scale)"),
    "--timestamp-col": (None, "ratings column of the Unix times"),
    "--movie-id-col": (None, "--movies column of the movie ids (default: --movie-col)"),
    "--title-col": (None, "--movies column of the titles"),
    "--genres-col": (None, "--movies column of the genres, 'A|B|C'"),
    "--watcher-id-col": (None, "--watchers column of the watcher ids (default: --watcher-col)"),
    "--age-col": (None, "--watchers column of the ages in years"),
    "--education-col": (None, "--watchers column of the education levels"),
}
FILE_OPTIONS = ["--movies", "--watchers", "--sep", *TABLE_OPTIONS]


def _separator(text: str) -> str:
    return {"\\t": "\t", "tab": "\t"}.get(text, text)


def _flag(argument: str, position: int) -> str:
    """read_table's argument as this command's flag: movie_col=1 -> --movie-col 1."""
    return f"--{argument.replace('_', '-')} {position}"


def read_columns(args: argparse.Namespace, progress: ReadProgress) -> me.DatasetColumns:
    """The dataset PATH holds: a MovieLens directory, or a table file and its companions.
    A file that is missing or cannot be read is a usage error, told in the file's terms."""
    from movie_embeddings import datasets

    for option in ("path", "movies", "watchers"):
        given = getattr(args, option)
        if given is not None and not Path(given).exists():
            raise UsageError(f"no such file or directory: {given}")
    try:
        return _read_columns(args, progress)
    except datasets.FileError as exc:
        raise UsageError(exc.describe(_flag, " ")) from exc
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise UsageError(f"{exc.filename}: {exc.strerror}") from exc


def _read_columns(args: argparse.Namespace, progress: ReadProgress) -> me.DatasetColumns:
    from movie_embeddings import datasets

    path = Path(args.path)
    table = args.format == "csv" or (args.format == "auto" and not path.is_dir())
    given = [option for option in FILE_OPTIONS if getattr(args, dest(option)) is not None]
    if not table:
        if given:
            raise UsageError(f"import: {given[0]} is for a table file, not a MovieLens directory")
        return datasets.read_movielens(path, args.format, progress=progress)
    if path.is_dir():
        raise UsageError(f"import: --format csv reads a file; {path} is a directory")
    columns: dict[str, Any] = {
        dest(option): default
        if getattr(args, dest(option)) is None
        else getattr(args, dest(option))
        for option, (default, _) in TABLE_OPTIONS.items()
    }
    return datasets.read_table(
        path,
        **columns,
        movies=args.movies,
        watchers=args.watchers,
        sep=args.sep and _separator(args.sep),
        progress=progress,
    )


IMPORT_CHUNK_ROWS = 100_000  # rows a message of the import stream carries


def _in_file_terms(exc: me.InvalidArgument, columns: me.DatasetColumns) -> me.InvalidArgument:
    """The server's refusal with each row of the stream it names (chunks[1].ratings.
    movie_ids[1]) told as the file, line and column it was read from."""
    from movie_embeddings.datasets import FileColumns

    if not isinstance(columns, FileColumns):
        return exc
    told = functools.partial(columns.in_file_terms, chunk_rows=IMPORT_CHUNK_ROWS)
    violations = [(told(field), told(text)) for field, text in exc.field_violations]
    return me.InvalidArgument(told(str(exc)), exc.code, violations)


def cmd_import(client: me.Client, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        with import_display() as display:
            columns = read_columns(args, display.read)
            display.say(
                f"read {len(columns.ratings):,} ratings, "
                f"{len(columns.movies or ()):,} movies and {len(columns.watchers or ()):,} "
                f"watchers from {args.path} in {time.perf_counter() - started:.1f} s"
            )
            try:
                info = client.import_dataset(
                    args.name,
                    columns,
                    description=args.description,
                    chunk_rows=IMPORT_CHUNK_ROWS,
                    progress=display.send,
                    timeout=args.timeout,
                )
            except me.InvalidArgument as exc:
                raise _in_file_terms(exc, columns) from exc
    except KeyboardInterrupt:
        eprint("cancelled; nothing stored")
        return 130
    except ImportError as exc:  # no pyarrow: the `data` extra is not installed
        raise UsageError(str(exc)) from exc
    if args.json:
        print_json(info)
    else:
        print(f"imported {describe_dataset(info)}")
    return 0


def _import_command(sub: Any) -> None:
    from movie_embeddings.datasets import FORMATS

    imp = client_command(
        sub,
        "import",
        cmd_import,
        help="import a ratings file or a MovieLens directory as a dataset",
        description="Read a MovieLens directory (100k, 1M/10M, latest/20M/25M/32M) or a "
        "CSV/TSV/Parquet table of ratings, with live progress, and store it on the server "
        "as the next version of dataset NAME; print what was stored. Needs pyarrow: "
        "pip install 'movie-embeddings[data]'.",
    )
    imp.add_argument("path", metavar="PATH", help="a MovieLens directory, or a table file")
    imp.add_argument("--name", required=True, help="dataset to add a version to")
    imp.add_argument(
        "--format",
        choices=[*FORMATS, "csv"],
        default="auto",
        help="how to read PATH: auto recognises a MovieLens directory by its files and reads "
        "any other file as a table (csv); movielens is latest/20M/25M/32M "
        "(default: %(default)s)",
    )
    imp.add_argument("--description", default="", help="free text kept with the version")
    files = imp.add_argument_group(
        "table files",
        "a column is a header name, or a 0-based position in a file without a header",
    )
    files.add_argument("--movies", help="table of the catalogue: movie ids, titles, genres")
    files.add_argument("--watchers", help="table of the watchers' features: ids, age, education")
    files.add_argument(
        "--sep",
        help="separator of the table files, e.g. ',' or 'tab' (default: by extension: ',' for "
        ".csv, tab for .tsv; else guessed from the first lines; Parquet needs none)",
    )
    for option, (default, text) in TABLE_OPTIONS.items():
        shown = "" if "(default" in text else f" (default: {default or 'none'})"
        files.add_argument(option, metavar="COLUMN", default=None, help=text + shown)


def add_commands(sub: Any) -> None:
    _import_command(sub)
    datasets = client_command(
        sub,
        "datasets",
        cmd_datasets,
        help="list the stored datasets, or delete one",
        description="List the stored dataset versions (of NAME only when given), or with "
        "`delete NAME` delete them; models trained on a deleted dataset keep working.",
    )
    datasets.add_argument(
        "words",
        nargs="*",
        metavar="NAME",
        help="the dataset to list (default: every dataset); `datasets delete NAME` deletes "
        "NAME instead (every version, or --version)",
    )
    datasets.add_argument(
        "--version",
        type=nonnegative_int,
        default=0,
        help="only this version; 0 = every version (default: %(default)s)",
    )
