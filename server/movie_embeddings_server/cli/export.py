"""`export`: a model's movie vectors with ids, titles, genres and like counts, to a file."""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

import movie_embeddings as me

from .common import UsageError, client_command, model_ref, print_json, stderr_console, writable

Pages = Iterable[me.MovieVectors]
GENRES_JOINED_BY = "|"  # as MovieLens writes them, where a format has no list type
PROJECTOR_FILES = ("vectors.tsv", "metadata.tsv", "projector_config.pbtxt")
METADATA_COLUMNS = ("movie_id", "title", "genres", "num_likes")
FORMATS = {
    "npy": "one .npz archive (named as given) that numpy.load reads without pickle: arrays "
    "movie_ids (int64), vectors (float32, movies x dim), titles and genres ('|'-joined; "
    "fixed-width unicode), num_likes (int64)",
    "parquet": "a Parquet file: columns movie_id, title, genres (list<string>), num_likes, "
    "vector (fixed_size_list<float32>)",
    "csv": "a CSV file with a header: movie_id,title,genres ('|'-joined),num_likes,v0,...",
    "projector": "a directory for TensorBoard's Embedding Projector: vectors.tsv, "
    "metadata.tsv (with a header row) and projector_config.pbtxt",
}


def _genres(page: me.MovieVectors) -> list[str]:
    return [GENRES_JOINED_BY.join(g) for g in page.genres]


def _vector_columns(page: me.MovieVectors) -> dict[str, np.ndarray]:
    return {f"v{i}": page.vectors[:, i] for i in range(page.vectors.shape[1])}


def _peeked(pages: Pages) -> tuple[me.MovieVectors, Iterator[me.MovieVectors]]:
    """The first page (the vectors' width, the model), and every page again."""
    iterator = iter(pages)
    first = next(iterator)  # a stream has a page at least: a catalogue has a movie at least
    return first, itertools.chain([first], iterator)


def write_npz(pages: Pages, path: Path) -> None:
    read = list(pages)  # the archive's arrays are written whole
    with path.open("wb") as file:  # a file object: numpy adds no .npz to the name
        np.savez(
            file,
            movie_ids=np.concatenate([p.movie_ids for p in read]),
            vectors=np.concatenate([p.vectors for p in read]),
            titles=np.array([t for p in read for t in p.titles], dtype=np.str_),
            genres=np.array([g for p in read for g in _genres(p)], dtype=np.str_),
            num_likes=np.concatenate([p.num_likes for p in read]),
        )


def write_parquet(pages: Pages, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    first, pages = _peeked(pages)
    dim = first.vectors.shape[1]
    schema = pa.schema(
        [
            ("movie_id", pa.int64()),
            ("title", pa.string()),
            ("genres", pa.list_(pa.string())),
            ("num_likes", pa.int64()),
            ("vector", pa.list_(pa.float32(), dim)),
        ],
        metadata={"model": f"{first.model.name} v{first.model.version}"},
    )
    with pq.ParquetWriter(path, schema) as writer:
        for page in pages:  # a row group each
            columns = {
                "movie_id": page.movie_ids,
                "title": page.titles,
                "genres": [list(g) for g in page.genres],
                "num_likes": page.num_likes,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(page.vectors.ravel()), dim),
            }
            writer.write_table(pa.table(columns, schema=schema))


@contextmanager
def _rows(path: Path, header: str, delimiter: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """`write(columns)` appending a page's rows to `path` after its `header`, through pyarrow's
    CSV writer: numbers in their shortest exact form (ML-25M's 12 million floats in seconds,
    where Python formats them in a minute), text quoted as CSV needs (never, for a TSV of
    numbers)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    quoting = "needed" if delimiter == "," else "none"
    options = pa_csv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style=quoting)
    with path.open("wb") as file:
        file.write(header.encode())
        yield lambda columns: pa_csv.write_csv(pa.table(columns), file, options)


def write_csv(pages: Pages, path: Path) -> None:
    first, pages = _peeked(pages)
    header = ",".join([*METADATA_COLUMNS, *_vector_columns(first)]) + "\n"
    with _rows(path, header, ",") as write:
        for page in pages:
            write(
                {
                    "movie_id": page.movie_ids,
                    "title": page.titles,
                    "genres": _genres(page),
                    "num_likes": page.num_likes,
                    **_vector_columns(page),
                }
            )


_SPACED = str.maketrans("\t\n\r", "   ")


def _cell(text: str) -> str:
    """Text for a TSV cell: the projector splits on tabs and newlines and knows no quoting."""
    return text.translate(_SPACED)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_projector(pages: Pages, directory: Path) -> None:
    """What TensorBoard's Embedding Projector loads from a log directory: the vectors (TSV,
    no header), their metadata (TSV, a header row: several columns) and the config naming
    both, relative to the directory."""
    first, pages = _peeked(pages)
    directory.mkdir()
    with (
        _rows(directory / "vectors.tsv", "", "\t") as vectors,
        (directory / "metadata.tsv").open("w", encoding="utf-8", newline="\n") as metadata,
    ):
        metadata.write("\t".join(METADATA_COLUMNS) + "\n")
        for page in pages:
            vectors(_vector_columns(page))
            rows = zip(
                page.movie_ids.tolist(),
                page.titles,
                _genres(page),
                page.num_likes.tolist(),
                strict=True,
            )
            metadata.writelines(f"{m}\t{_cell(t)}\t{_cell(g)}\t{n}\n" for m, t, g, n in rows)
    name = f"{first.model.name} v{first.model.version}"
    (directory / "projector_config.pbtxt").write_text(
        "embeddings {\n"
        f"  tensor_name: {_quoted(name)}\n"
        '  tensor_path: "vectors.tsv"\n'
        '  metadata_path: "metadata.tsv"\n'
        "}\n"
    )


WRITERS: dict[str, Callable[[Pages, Path], None]] = {
    "npy": write_npz,
    "parquet": write_parquet,
    "csv": write_csv,
    "projector": write_projector,
}


def output_path(fmt: str, name: str) -> Path:
    """Where to write: a file in an existing directory, or for the projector a directory in
    one (an existing one only when it holds nothing but an earlier export's files)."""
    if fmt != "projector":
        return writable(name)
    path = Path(name)
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {name}: no directory {path.parent}")
    if path.exists() and not path.is_dir():
        raise UsageError(f"cannot write {name}: a file, where the projector's is a directory")
    others = sorted(set(os.listdir(path)) - set(PROJECTOR_FILES)) if path.is_dir() else []
    if others:
        raise UsageError(
            f"cannot write {name}: the directory holds {others[0]}, not only "
            f"{', '.join(PROJECTOR_FILES)} of an earlier export"
        )
    return path


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write(fmt: str, pages: Pages, path: Path) -> None:
    """The pages in `fmt` at `path`, written under a temporary name beside it and renamed
    into place once whole: a crash or Ctrl-C leaves the old export (or none), never half a
    new one."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        WRITERS[fmt](pages, temp)
        if path.is_dir():  # an earlier projector export: set aside, then removed
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            path.rename(old)
            try:
                temp.rename(path)
            except OSError:
                old.rename(path)
                raise
            _remove(old)
        else:
            temp.replace(path)
    finally:
        _remove(temp)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """`advance(movies)` after each page: a live bar on a terminal (stderr), else nothing (the
    summary line says what was written)."""
    console = stderr_console()
    if not console.is_terminal:
        yield lambda movies: None
        return
    columns = (
        TextColumn("exporting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("movies"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bars:
        task = bars.add_task("export", total=total)
        yield lambda movies: bars.advance(task, movies)


def _advancing(pages: Pages, advance: Callable[[int], None]) -> Iterator[me.MovieVectors]:
    for page in pages:
        yield page
        advance(len(page))  # once the page is written


def cmd_export(client: me.Client, args: argparse.Namespace) -> None:
    path = output_path(args.format, args.output)
    info = client.get_model(model_ref(args))  # its version, for every page and the bar's end
    with _progress(info.num_movies) as advance:
        pages = client.iter_movie_vectors(model=info.ref)
        write(args.format, _advancing(pages, advance), path)
    if args.json:
        print_json(
            {
                "path": str(path),
                "format": args.format,
                "num_movies": info.num_movies,
                "embedding_dim": info.embedding_dim,
                "model": info.ref,
            }
        )
        return
    print(
        f"wrote {path}: {info.num_movies:,} movies x {info.embedding_dim} "
        f"of {info.name} v{info.version} ({args.format})"
    )


def add_commands(sub: Any) -> None:
    export = client_command(
        sub,
        "export",
        cmd_export,
        model=True,
        help="write a model's movie vectors, ids, titles, genres and like counts to a file",
        description="Write every movie's vector with its id, title, genres and like count "
        "(in the model's training data), in catalogue order, read page by page (a progress "
        "bar on a terminal). The file is written under a temporary name and renamed into "
        "place once whole.",
    )
    export.add_argument(
        "--format",
        required=True,
        choices=list(FORMATS),
        help="; ".join(f"{name}: {what}" for name, what in FORMATS.items()),
    )
    export.add_argument(
        "--output",
        required=True,
        metavar="PATH",
        help="file to write (a directory for projector), in an existing directory; "
        "an earlier export there is replaced",
    )
