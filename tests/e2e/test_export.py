"""`export` in every format, loaded back as its readers load it; `reconstruct --liked-titles`;
the SDK's reconstruct without watcher features: real CLI processes and a real server."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CLI, ServerProcess

import movie_embeddings as me
from movie_embeddings_server.cli import export

MODEL = "export-tiny"
TITLES = {
    1: "Toy Story (1995)",
    2: "Misérables, Les (1995)",
    3: 'Movie "Quoted", With Commas (2000)',
    4: "Tab\tand\nnewline (2001)",  # no format may split it into cells or lines
    5: "Finding Nemo (2003)",
    6: "",  # untitled
}
NUM_MOVIES = 30
FORMATS = list(export.FORMATS)


@pytest.fixture(scope="module")
def model(server: ServerProcess) -> me.ModelInfo:
    """A model on a dataset of two tastes (odd and even movies), titled and with genres, no
    ages nor education, trained on the shared server."""
    rng = np.random.default_rng(3)
    watchers, movies = np.meshgrid(np.arange(1, 41), np.arange(1, NUM_MOVIES + 1))
    keep = rng.random(watchers.shape) < 0.5
    liked = (watchers % 2) == (movies % 2)
    ratings = {
        "watcher_id": watchers[keep],
        "movie_id": movies[keep],
        "rating": np.where(liked[keep], 5.0, 1.0),
    }
    ids = np.arange(1, NUM_MOVIES + 1)
    catalogue = {
        "movie_id": ids,
        "title": [TITLES.get(m, f"Movie {m} (1999)") for m in ids],
        "genres": ["Comedy|Drama" if m % 2 else ("Action" if m % 3 else "") for m in ids],
    }
    with me.Client(server.target, timeout=120) as client:
        client.import_dataset(MODEL, ratings, movies=catalogue)
        *_, info = client.train(MODEL, dataset=MODEL, epochs=2, embedding_dim=6, seed=1)
    assert isinstance(info, me.ModelInfo) and not (info.has_age or info.has_education)
    return info


@pytest.fixture(scope="module")
def table(server: ServerProcess, model: me.ModelInfo) -> me.MovieVectors:
    with me.Client(server.target) as client:
        return client.movie_table(model=model.ref)


def run_cli(server: ServerProcess, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "--target", server.target],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
    )


def call(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(server, *args)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
    return result


def assert_usage_error(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr, result.stderr


# --- each format as its own readers load it: (ids, titles, genres, likes, vectors) ------------

Loaded = tuple[list[int], list[str], list[tuple[str, ...]], list[int], np.ndarray]


def _split(genres: str) -> tuple[str, ...]:
    return tuple(genres.split("|")) if genres else ()


def load_npy(path: Path) -> Loaded:
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["genres", "movie_ids", "num_likes", "titles", "vectors"]
        assert archive["vectors"].dtype == np.float32
        assert archive["movie_ids"].dtype == archive["num_likes"].dtype == np.int64
        assert archive["titles"].dtype.kind == archive["genres"].dtype.kind == "U"
        return (
            archive["movie_ids"].tolist(),
            archive["titles"].tolist(),
            [_split(g) for g in archive["genres"].tolist()],
            archive["num_likes"].tolist(),
            archive["vectors"],
        )


def load_parquet(path: Path) -> Loaded:
    read = pq.read_table(path)
    dim = read.schema.field("vector").type.list_size
    assert read.schema.field("vector").type == pa.list_(pa.float32(), dim)
    assert read.schema.field("genres").type == pa.list_(pa.string())
    assert read.schema.metadata[b"model"].startswith(MODEL.encode() + b" v")
    columns = read.to_pydict()
    return (
        columns["movie_id"],
        columns["title"],
        [tuple(g) for g in columns["genres"]],
        columns["num_likes"],
        np.asarray(columns["vector"], dtype=np.float32),
    )


def load_csv(path: Path) -> Loaded:
    with path.open(newline="", encoding="utf-8") as file:
        header, *rows = list(csv.reader(file))
    dim = len(header) - 4
    assert header == ["movie_id", "title", "genres", "num_likes", *(f"v{i}" for i in range(dim))]
    return (
        [int(r[0]) for r in rows],
        [r[1] for r in rows],
        [_split(r[2]) for r in rows],
        [int(r[3]) for r in rows],
        np.array([r[4:] for r in rows], dtype=np.float32),
    )


def load_projector(directory: Path) -> Loaded:
    """The files as TensorBoard's projector reads them: the config's relative paths, a TSV of
    floats with no header, a TSV of metadata whose first row names its columns."""
    assert sorted(os.listdir(directory)) == sorted(export.PROJECTOR_FILES)
    config = (directory / "projector_config.pbtxt").read_text()
    found = dict(re.findall(r'^\s+(\w+): "([^"]*)"$', config, re.MULTILINE))
    assert re.fullmatch(r"embeddings \{\n(  \w+: \"[^\"]*\"\n)+\}\n", config), config
    assert found["tensor_name"].startswith(f"{MODEL} v")
    vectors = (directory / found["tensor_path"]).read_text().split("\n")
    metadata = (directory / found["metadata_path"]).read_text(encoding="utf-8").split("\n")
    assert vectors.pop() == metadata.pop() == ""  # each line ends in a newline
    header, *rows = [line.split("\t") for line in metadata]
    assert header == ["movie_id", "title", "genres", "num_likes"]
    assert len(rows) == len(vectors) and {len(r) for r in rows} == {4}
    return (
        [int(r[0]) for r in rows],
        [r[1] for r in rows],
        [_split(r[2]) for r in rows],
        [int(r[3]) for r in rows],
        np.array([line.split("\t") for line in vectors], dtype=np.float32),
    )


LOADERS: dict[str, Callable[[Path], Loaded]] = {
    "npy": load_npy,
    "parquet": load_parquet,
    "csv": load_csv,
    "projector": load_projector,
}


def assert_equal_to(loaded: Loaded, table: me.MovieVectors, fmt: str) -> None:
    ids, titles, genres, likes, vectors = loaded
    assert ids == table.movie_ids.tolist()
    if fmt == "projector":  # its TSV has no quoting: a tab or newline in a title is a space
        assert titles[3] == "Tab and newline (2001)"
        assert titles[:3] + titles[4:] == list(table.titles[:3] + table.titles[4:])
    else:
        assert titles == list(table.titles)
    assert genres == list(table.genres)
    assert likes == table.num_likes.tolist()
    np.testing.assert_array_equal(vectors, table.vectors)  # exactly: every float round-trips


def test_the_catalogue_is_as_the_tests_made_it(table: me.MovieVectors) -> None:
    assert table.movie_ids.tolist() == list(range(1, NUM_MOVIES + 1))
    assert table.titles[3] == TITLES[4] and table.titles[5] == ""
    assert table.genres[:3] == (("Comedy", "Drama"), ("Action",), ("Comedy", "Drama"))
    assert table.genres[5] == () and table.num_likes.sum() > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_loads_back_equal_to_the_movie_table(
    server: ServerProcess, model: me.ModelInfo, table: me.MovieVectors, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"out.{fmt}"
    result = call(server, "export", "--format", fmt, "--output", str(path), "--model", MODEL)
    assert result.stderr == ""  # not a terminal: no bar
    assert result.stdout == (
        f"wrote {path}: {NUM_MOVIES} movies x 6 of {MODEL} v{model.version} ({fmt})\n"
    )
    assert_equal_to(LOADERS[fmt](path), table, fmt)
    assert os.listdir(tmp_path) == [path.name]  # no temporary left beside it


@pytest.mark.parametrize("fmt", FORMATS)
def test_pages_are_written_one_after_another(
    server: ServerProcess, model: me.ModelInfo, table: me.MovieVectors, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / "out"
    with me.Client(server.target) as client:
        pages = list(client.iter_movie_vectors(model=model.ref, page_size=7))
    assert len(pages) == 5
    export.write(fmt, pages, path)
    assert_equal_to(LOADERS[fmt](path), table, fmt)
    # Again over the first export: replaced whole.
    export.write(fmt, pages[:1], path)
    assert LOADERS[fmt](path)[0] == list(range(1, 8))
    assert os.listdir(tmp_path) == ["out"]


def _failing(pages: list[me.MovieVectors]) -> Iterator[me.MovieVectors]:
    yield pages[0]
    raise me.Unavailable("the server went away")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_failed_export_leaves_the_earlier_one_whole(
    server: ServerProcess, model: me.ModelInfo, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / "out"
    with me.Client(server.target) as client:
        pages = list(client.iter_movie_vectors(model=model.ref, page_size=7))
    with pytest.raises(me.Unavailable):
        export.write(fmt, _failing(pages), path)
    assert os.listdir(tmp_path) == []  # nothing, not half a file
    export.write(fmt, pages[:2], path)
    with pytest.raises(me.Unavailable):
        export.write(fmt, _failing(pages), path)
    assert os.listdir(tmp_path) == ["out"]
    assert LOADERS[fmt](path)[0] == list(range(1, 15))


def test_export_json_and_a_bar_on_a_terminal(
    server: ServerProcess, model: me.ModelInfo, tmp_path: Path
) -> None:
    path = tmp_path / "v.npz"
    args = ("export", "--format", "npy", "--output", str(path), "--model", MODEL, "--json")
    result = run_cli(server, *args, FORCE_COLOR="1")  # rich takes stderr for a terminal
    assert result.returncode == 0, result.stderr
    assert "\x1b[" in result.stderr and f"{NUM_MOVIES}/{NUM_MOVIES}" in result.stderr
    assert json.loads(result.stdout) == {
        "path": str(path),
        "format": "npy",
        "num_movies": NUM_MOVIES,
        "embedding_dim": 6,
        "model": {"name": MODEL, "version": model.version, "label": ""},
    }


def test_export_refuses_an_output_it_cannot_write(server: ServerProcess, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "v.npz"
    for fmt in ("npy", "projector"):
        result = run_cli(server, "export", "--format", fmt, "--output", str(missing))
        assert_usage_error(result, f"cannot write {missing}: no directory {missing.parent}")
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli(server, "export", "--format", "projector", "--output", str(tmp_path))
    assert_usage_error(result, "holds notes.txt")
    result = run_cli(server, "export", "--format", "csv", "--output", str(tmp_path))
    assert_usage_error(result, "it is a directory")
    assert os.listdir(tmp_path) == ["notes.txt"]


# --- reconstruct by titles, and without the features a model was trained without -------------


def test_liked_titles_equal_liked_ids(server: ServerProcess, model: me.ModelInfo) -> None:
    common = ("--model", MODEL, "--top-k", "3")
    by_ids = call(server, "reconstruct", "--liked", "1,5", *common, "--json")
    by_titles = call(server, "reconstruct", "--liked-titles", "toy story; NEMO;", *common, "--json")
    assert json.loads(by_titles.stdout) == json.loads(by_ids.stdout)
    assert by_titles.stderr == "liked: Toy Story (1995) [1], Finding Nemo (2003) [5]\n"

    text = call(server, "reconstruct", "--liked-titles", "miserables", *common).stdout
    assert text.splitlines()[0] == "liked: Misérables, Les (1995) [2]"
    assert text.splitlines()[1].split() == ["movie_id", "probability"]  # the top 3 alone


def test_liked_titles_refuse_a_part_matching_nothing(
    server: ServerProcess, model: me.ModelInfo
) -> None:
    result = run_cli(server, "reconstruct", "--liked-titles", "toy story; zzzz", "--model", MODEL)
    assert_usage_error(result, "--liked-titles: no movie title matches 'zzzz'")
    result = run_cli(server, "reconstruct", "--liked-titles", " ; ", "--model", MODEL)
    assert_usage_error(result, "--liked-titles ' ; ' names no title")
    result = run_cli(server, "reconstruct", "--liked-titles", "toy", "--liked", "1")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_the_sdk_reconstructs_without_features_the_model_was_trained_without(
    server: ServerProcess, model: me.ModelInfo
) -> None:
    with me.Client(server.target) as client:
        got = client.reconstruct([1, 5], top_k=3, model=MODEL)
        given = client.reconstruct([1, 5], age_years=30, education=2, top_k=3, model=MODEL)

    async def asynchronous() -> me.Reconstruction:
        async with me.AsyncClient(server.target) as client:
            return await client.reconstruct([1, 5], top_k=3, model=MODEL)

    for other in (given, asyncio.run(asynchronous())):
        np.testing.assert_array_equal(got.probabilities, other.probabilities)
        assert got.recommendations == other.recommendations


def test_a_model_trained_with_features_still_needs_them(server: ServerProcess) -> None:
    """The synthetic `default` takes ages and education: leaving one out is refused."""
    with me.Client(server.target) as client:
        for given, missing in (({"education": 1}, "age_years"), ({"age_years": 30}, "education")):
            with pytest.raises(me.InvalidArgument) as caught:
                client.reconstruct([1, 2], **given)
            assert caught.value.code is not None and caught.value.code.name == "INVALID_ARGUMENT"
            ((field, why),) = caught.value.field_violations
            assert field == missing and re.fullmatch(
                r"must be given: model default v\d+ was trained with it", why
            )

    async def asynchronous() -> None:
        async with me.AsyncClient(server.target) as client:
            await client.reconstruct([1, 2])

    with pytest.raises(me.InvalidArgument, match="age_years: must be given"):
        asyncio.run(asynchronous())
