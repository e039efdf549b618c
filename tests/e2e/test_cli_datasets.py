"""The CLI on the user's own data: import files, list and delete datasets, train on one, search
titles, neighbours by title; real subprocesses against the session's server process."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, ServerProcess

import movie_embeddings as me

CLI_TIMEOUT = 180.0  # seconds: an import and a small training plus the interpreter's start
TITLES = {
    1: "Toy Story (1995)",
    2: "Misérables, Les (1995)",
    3: 'Movie "Quoted", With Commas (2000)',
    4: "Shawshank Redemption, The (1994)",
    5: "Toy Story 2 (1999)",
}
NUM_MOVIES = 30  # ids 1..30, the first five titled above, the rest "Movie N (2001)"
NUM_WATCHERS = 60


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL
    )


def call(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(*args, "--target", server.target)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def call_json(server: ServerProcess, *args: str) -> Any:
    return json.loads(call(server, *args, "--json").stdout)


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text


def _ratings() -> list[tuple[int, int, float]]:
    """Two tastes: odd watchers like the odd movies, even watchers the even ones."""
    rng = random.Random(5)
    rows = []
    for watcher in range(1, NUM_WATCHERS + 1):
        for movie in rng.sample(range(1, NUM_MOVIES + 1), 15):
            liked = movie % 2 == watcher % 2
            rows.append((watcher, movie, rng.choice([4.0, 4.5, 5.0] if liked else [1.0, 2.5])))
    return rows


@pytest.fixture(scope="module")
def movielens_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MovieLens latest-style directory: ratings.csv, movies.csv with quoted UTF-8 titles."""
    directory = tmp_path_factory.mktemp("ml-tiny")
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{w},{m},{r:g},{1_000_000 + i}" for i, (w, m, r) in enumerate(_ratings())]
    (directory / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"]
    for movie in range(1, NUM_MOVIES + 1):
        title = TITLES.get(movie, f"Movie {movie} (2001)")
        movies.append(f"{movie},{_csv_field(title)},{'Comedy|Drama' if movie % 2 else 'Action'}")
    (directory / "movies.csv").write_text("\n".join(movies) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def imported(server: ServerProcess, movielens_dir: Path) -> dict[str, Any]:
    """The directory imported as `clitiny` (its JSON DatasetInfo)."""
    return call_json(server, "import", str(movielens_dir), "--name", "clitiny")


@pytest.fixture(scope="module")
def trained(server: ServerProcess, imported: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Model `clids` trained on `clitiny` through the CLI (two epochs)."""
    return call(
        server,
        "train",
        *("--model", "clids", "--dataset", "clitiny", "--epochs", "2", "--seed", "3"),
        *("--min-likes-per-watcher", "2", "--holdout-fraction", "0.1"),
    )


def test_import_prints_progress_lines_and_a_summary(
    server: ServerProcess, client: me.Client, movielens_dir: Path
) -> None:
    result = call(server, "import", str(movielens_dir), "--name", "clisummary")
    # Not a terminal: plain lines, no bars.
    lines = result.stderr.splitlines()
    assert re.fullmatch(
        rf"read 900 ratings, {NUM_MOVIES} movies and 0 watchers from {movielens_dir} in "
        r"\d+\.\d s",
        lines[0],
    ), lines
    assert lines[-1] == f"sent {900 + NUM_MOVIES:,}/{900 + NUM_MOVIES:,} rows (100%)", lines
    (info,) = client.list_datasets("clisummary")
    summary = result.stdout.strip()
    assert summary.startswith(f"imported clisummary v{info.version} ")
    assert f"900 ratings (1..5) by {NUM_WATCHERS} watchers of {NUM_MOVIES} movies" in summary
    assert f"({NUM_MOVIES} titled), watcher features: none" in summary


def test_import_on_a_terminal_draws_bars_by_bytes_and_rows(
    server: ServerProcess, movielens_dir: Path
) -> None:
    result = subprocess.run(
        [*CLI, "import", str(movielens_dir), "--name", "clibars", "--target", server.target],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "FORCE_COLOR": "1"},  # rich takes stderr for a terminal
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", result.stderr)
    assert re.search(r"reading .* (\d+\.\d) kB/\1 kB", plain), plain  # every byte read
    assert re.search(r"sending +━+ 930/930 rows", plain), plain
    assert f"read 900 ratings, 30 movies and 0 watchers from {movielens_dir} in " in plain
    assert result.stdout.startswith("imported clibars v1 ") and result.stdout.count("\n") == 1


def test_import_json_is_the_stored_dataset(
    server: ServerProcess, client: me.Client, imported: dict[str, Any]
) -> None:
    assert imported["ref"] == {"name": "clitiny", "version": 1}
    assert (imported["num_ratings"], imported["num_watchers"], imported["num_movies"]) == (
        900,
        NUM_WATCHERS,
        NUM_MOVIES,
    )
    assert imported["num_titled_movies"] == NUM_MOVIES
    assert (imported["has_age"], imported["has_education"]) == (False, False)
    info = client.get_dataset("clitiny", 1)
    assert imported["create_time"] == info.create_time.isoformat()
    assert imported["size_bytes"] == info.size_bytes > 0


def test_datasets_lists_them(server: ServerProcess, imported: dict[str, Any]) -> None:
    listed = call_json(server, "datasets", "clitiny")
    assert [d["ref"] for d in listed] == [imported["ref"]]
    assert listed[0] == imported
    text = call(server, "datasets").stdout.splitlines()
    assert any(line.startswith("clitiny v1 ") for line in text), text


def test_a_headerless_tsv_by_column_positions(server: ServerProcess, tmp_path: Path) -> None:
    ratings = tmp_path / "ratings.tsv"
    ratings.write_text("".join(f"{m}\t{w}\t{r:g}\n" for w, m, r in _ratings()))
    watchers = tmp_path / "watchers.csv"
    watchers.write_text("id,age\n" + "".join(f"{w},{20 + w}\n" for w in range(1, NUM_WATCHERS + 1)))
    data = call_json(
        server,
        "import",
        str(ratings),
        *("--name", "clitsv", "--description", "by position"),
        *("--watcher-col", "1", "--movie-col", "0", "--rating-col", "2"),
        *("--watchers", str(watchers), "--watcher-id-col", "id", "--age-col", "age"),
    )
    assert (data["num_ratings"], data["num_watchers"], data["num_movies"]) == (
        900,
        NUM_WATCHERS,
        NUM_MOVIES,
    )
    assert (data["has_age"], data["description"]) == (True, "by position")


HEADER = "userId,movieId,rating\n"


@pytest.mark.parametrize(
    ("text", "options", "code", "error"),
    [
        # Refused by the server, which names a stream position: told as the file's line.
        (HEADER + "1,10,4\n1,-11,4\n", (), 1, "INVALID_ARGUMENT: {path}, line 3, column "
         "'movieId': must be >= 0, got -11"),
        (HEADER + "1,10,4\n1,11,\n", (), 2, "{path}, line 3, column 'rating': no value, but "
         "every row needs a rating"),
        (HEADER + "1,10,4\n1,tt0114709,4\n", (), 2, "{path}, line 3, column 'movieId': movie "
         "ids must be integers, got 'tt0114709': give a column of integer ids, or number the "
         "ids first (one integer per distinct id, the same in every file)"),
        ("", (), 2, "{path}: the file is empty"),
        ("1,10,4\n1,11,3\n", (), 2, "{path}: no column 'userId'; its first line, '1,10,4', "
         "looks like data, not a header; if it has no header, give its columns by 0-based "
         "position: --watcher-col 0 --movie-col 1 --rating-col 2"),
        (HEADER + "1,10,4\n", ("--movies", "{dir}/nowhere.csv"), 2,
         "no such file or directory: {dir}/nowhere.csv"),
    ],
    ids=["negative-id", "missing-rating", "text-id", "empty", "headerless", "missing-movies"],
)  # fmt: skip
def test_an_import_refusal_is_one_line_naming_the_file_line_and_column(
    server: ServerProcess,
    client: me.Client,
    tmp_path: Path,
    text: str,
    options: tuple[str, ...],
    code: int,
    error: str,
) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(text)
    given = [o.format(dir=tmp_path) for o in options]
    result = run_cli("import", str(path), "--name", "clibad", *given, "--target", server.target)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    *before, last = result.stderr.splitlines()
    assert last == "error: " + error.format(path=path, dir=tmp_path), result.stderr
    assert code == 1 or not before, result.stderr  # refused before reading: that line only
    assert client.list_datasets("clibad") == []


def test_train_on_a_dataset(
    server: ServerProcess, client: me.Client, trained: subprocess.CompletedProcess[str]
) -> None:
    # One line per epoch off a terminal, whatever steps the server reports inside them.
    lines = trained.stderr.splitlines()
    assert [line.split(" loss ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"], lines
    summary = trained.stdout.strip()
    assert summary.startswith("trained clids v1 "), summary
    assert "dataset clitiny v1: " in summary and "seed 3" in summary
    info = client.get_model(me.ModelRef("clids", 1))
    assert info.dataset is not None and info.dataset.dataset == me.DatasetRef("clitiny", 1)
    assert f"{info.num_train_watchers} watchers (+{info.num_heldout_watchers} held out)" in summary
    # The held-out figures, in the summary and in `models`.
    for figure in ("recall_at_20", "popularity_recall_at_20", "ndcg_at_100", "coverage_at_20"):
        assert f" {figure}={info.metrics[figure]:.4g}" in summary, figure
    (shown,) = call_json(server, "models", "--name", "clids")
    assert shown["metrics"] == pytest.approx(info.metrics)
    assert {"recall_at_50", "popularity_ndcg_at_100", "neighbour_genre_overlap"} <= set(
        shown["metrics"]
    )


def test_search_finds_titles_with_or_without_accents(
    server: ServerProcess, client: me.Client, trained: subprocess.CompletedProcess[str]
) -> None:
    found = call_json(server, "search", "toy story", "--model", "clids")
    assert {m["title"] for m in found} == {TITLES[1], TITLES[5]}
    assert found == [
        {
            "movie_id": m.movie_id,
            "title": m.title,
            "genres": list(m.genres),
            "num_likes": m.num_likes,
        }
        for m in client.search_movies("toy story", model="clids")
    ]
    text = call(server, "search", "miserables", "--model", "clids").stdout.splitlines()
    assert text[0].split() == ["movie_id", "likes", "title"]
    assert re.fullmatch(r"\s+2\s+\d+\s+Misérables, Les \(1995\)\s+\(Action\)", text[1]), text
    nothing = call(server, "search", "zzzz", "--model", "clids").stdout
    assert nothing == "no movie title matches 'zzzz'\n"


def test_nearest_by_title_says_which_movie_and_prints_titles(
    server: ServerProcess, client: me.Client, trained: subprocess.CompletedProcess[str]
) -> None:
    best = client.search_movies("shawshank", limit=1, model="clids")[0]
    lines = call(
        server, "nearest", "--title", "shawshank", "--k", "3", "--model", "clids"
    ).stdout.splitlines()
    assert lines[0] == f"nearest to {best.movie_id} {best.title}"
    expected = client.nearest_movies(best.movie_id, k=3, model="clids")
    assert [int(line.split()[0]) for line in lines[2:]] == [n.movie_id for n in expected]
    for line, n in zip(lines[2:], expected, strict=True):
        assert line.endswith(f"  {n.title}") and n.title, line
    # With --json, the match goes to stderr and stdout stays the neighbours' JSON.
    result = call(server, "nearest", "--title", "shawshank", "--model", "clids", "--json")
    assert result.stderr == f"nearest to {best.movie_id} {best.title}\n"
    assert [n["title"] for n in json.loads(result.stdout)] == [
        n.title for n in client.nearest_movies(best.movie_id, model="clids")
    ]
    missing = run_cli("nearest", "--title", "zzzz", "--model", "clids", "--target", server.target)
    assert missing.returncode == 1
    assert missing.stderr == "error: NOT_FOUND: no movie title matches 'zzzz'\n"


def test_reconstruct_prints_titles_beside_recommendations(
    server: ServerProcess, client: me.Client, trained: subprocess.CompletedProcess[str]
) -> None:
    # A dataset without ages or education: the model ignores them, so they may be left out.
    args = ("--liked", "1,3,7", "--model", "clids", "--top-k", "4")
    header, *rows = call(server, "reconstruct", *args).stdout.splitlines()
    assert header.split() == ["movie_id", "probability"]  # the top 4 alone, no probabilities
    expected = client.reconstruct(
        [1, 3, 7], age_years=30, education=1, top_k=4, model="clids"
    ).recommendations
    assert [int(row.split()[0]) for row in rows] == [r.movie_id for r in expected]
    assert all(row.endswith(f"  {r.title}") for row, r in zip(rows, expected, strict=True))


def test_datasets_delete_leaves_the_models_working(
    server: ServerProcess, client: me.Client, movielens_dir: Path
) -> None:
    call(server, "import", str(movielens_dir), "--name", "cligone")
    call(server, "import", str(movielens_dir), "--name", "cligone")
    call(server, "train", "--model", "cligone", "--dataset", "cligone", "--epochs", "1")
    one = call(server, "datasets", "delete", "cligone", "--version", "1").stdout
    assert one == "deleted cligone v1\n"
    assert [d.version for d in client.list_datasets("cligone")] == [2]
    assert call(server, "datasets", "delete", "cligone").stdout == "deleted cligone v2\n"
    assert call(server, "datasets", "cligone").stdout == "no datasets\n"
    assert len(call_json(server, "nearest", "1", "--k", "2", "--model", "cligone")) == 2


def test_recommend_a_watcher_of_the_dataset_by_its_id(
    server: ServerProcess, client: me.Client, trained: subprocess.CompletedProcess[str]
) -> None:
    expected = client.recommend(2, top_k=4, model="clids")
    liked = {m for w, m, r in _ratings() if w == 2 and r >= 4}
    assert len(expected) == 4 and not liked & {r.movie_id for r in expected}
    lines = call(server, "recommend", "2", "--top-k", "4", "--model", "clids").stdout.splitlines()
    assert lines[0].split() == ["movie_id", "probability"]
    assert [int(line.split()[0]) for line in lines[1:]] == [r.movie_id for r in expected]
    assert all(line.endswith(f"  {r.title}") for line, r in zip(lines[1:], expected, strict=True))
    got = call_json(server, "recommend", "2", "--top-k", "4", "--model", "clids")
    assert got == [
        {"movie_id": r.movie_id, "probability": r.probability, "title": r.title}
        | {"because_movie_ids": [], "because_titles": []}  # unless --because
        for r in expected
    ]
    missing = run_cli("recommend", "999", "--model", "clids", "--target", server.target)
    assert missing.returncode == 1
    assert missing.stderr.startswith(
        "error: NOT_FOUND: watchers[0].watcher_id: watcher 999 is not one of the "
    )


def test_filters_and_reasons_from_the_command_line(
    server: ServerProcess, client: me.Client, trained: subprocess.CompletedProcess[str]
) -> None:
    model = ("--model", "clids")
    lines = call(server, "nearest", "1", "--k", "3", "--genre", "action", *model).stdout
    expected = client.nearest_movies(1, k=3, model="clids", genres=["Action"])
    assert [int(line.split()[0]) for line in lines.splitlines()[1:]] == [
        n.movie_id for n in expected
    ]
    assert len(expected) == 3 and all(n.movie_id % 2 == 0 for n in expected)  # the even: Action
    got = call_json(server, "nearest", "2", "--k", "50", "--min-likes", "0", *model)
    assert len(got) == NUM_MOVIES - 1  # every movie but itself
    table = client.movie_table(model="clids")
    likes = dict(zip(table.movie_ids.tolist(), table.num_likes.tolist(), strict=True))
    floor = sorted(likes.values())[len(likes) // 2]  # half the movies have fewer likes
    liked = call_json(server, "nearest", "2", "--k", "50", "--min-likes", str(floor), *model)
    assert {n["movie_id"] for n in liked} == {m for m, n in likes.items() if n >= floor} - {2}
    args = ("recommend", "2", "--top-k", "3", "--exclude-genre", "Action", "--because", *model)
    shown = call(server, *args).stdout.splitlines()
    expected_r = client.recommend(
        2, top_k=3, exclude_genres=["Action"], because=True, model="clids"
    )
    assert [r.movie_id % 2 for r in expected_r] == [1, 1, 1]
    rows = [line for line in shown[1:] if not line.strip().startswith("because")]
    reasons = [line.strip() for line in shown[1:] if line.strip().startswith("because")]
    assert [int(row.split()[0]) for row in rows] == [r.movie_id for r in expected_r]
    assert reasons == [
        "because you liked "
        + "; ".join(f"{m} {t}" for m, t in zip(r.because_movie_ids, r.because_titles, strict=True))
        for r in expected_r
    ]
    (first,) = call_json(server, "recommend", "2", "--top-k", "1", "--because", *model)
    assert first["because_movie_ids"] and len(first["because_movie_ids"]) <= 3
    recon = call_json(
        server, "reconstruct", "--liked", "1,3,5", "--top-k", "2", "--genre", "Action", *model
    )
    assert [r["movie_id"] % 2 for r in recon["recommendations"]] == [0, 0]


def test_a_dataset_version_keeps_what_serving_and_reproducing_need(
    server: ServerProcess, client: me.Client, trained: subprocess.CompletedProcess[str]
) -> None:
    """A dataset version holds the served arrays and the settings, and no Keras model file
    (weights.npz rebuilds one), whichever trainer fitted it."""
    info = client.get_model(me.ModelRef("clids", 1))
    assert info.training.preset == "default"
    stored = {p.name for p in (server.data_dir / "clids" / "1").iterdir()}
    assert {"weights.npz", "metadata.json", "catalogue.npz"} <= stored
    assert "model.keras" not in stored
    assert client.reconstruct([1, 3], top_k=2, model="clids").recommendations
