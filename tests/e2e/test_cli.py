"""The `movie-embeddings` CLI as a user runs it: real subprocesses against a real server process."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CLI, ServerProcess

import movie_embeddings as me
from movie_embeddings_server.cli import build_parser

NUM_MOVIES = 80
CLI_TIMEOUT = 120.0  # seconds: a small training plus the interpreter's start

# Every option of every command, as documented (the README and scripts rely on these names).
COMMON = [
    "--target",
    "--json",
    "--timeout",
    "--token",
    "--tls",
    "--tls-ca",
    "--tls-cert",
    "--tls-key",
]
WITH_MODEL = [*COMMON, "--model", "--version"]
OPTIONS = {
    "serve": [
        "--host",
        "--port",
        "--data-dir",
        "--max-workers",
        "--max-concurrent-trains",
        "--max-cells",
        "--max-epochs",
        "--max-embedding-dim",
        "--max-hidden-units",
        "--grace-seconds",
        "--max-message-bytes",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--auth-token",
        "--auth-all",
        "--metrics-port",
        "--poll-seconds",
        "--server-id",
        "--access-log",
        "--log-level",
    ],
    "train": [
        *COMMON,
        "--model",
        "--num-watchers",
        "--num-movies",
        "--num-types",
        "--seed",
        "--preset",
        "--embedding-dim",
        "--hidden-units",
        "--epochs",
        "--batch-size",
        "--learning-rate",
        "--validation-fraction",
        "--embedding-initializer",
        "--embedding-l2",
        "--early-stopping-patience",
        "--learning-rate-schedule",
    ],
    "vector": [*WITH_MODEL, "--all", "--round", "MOVIE_ID"],
    "nearest": [*WITH_MODEL, "--k", "--metric", "--exclude", "MOVIE_ID"],
    "reconstruct": [
        *WITH_MODEL,
        "--liked",
        "--ratings-file",
        "--age",
        "--education",
        "--top-k",
    ],
    "models": [*COMMON, "--name"],
    "health": [*COMMON, "--service"],
    "plot": [*WITH_MODEL, "--output"],
}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def call(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """A client command against the test server; it must succeed without a word of warning."""
    result = run_cli(*args, "--target", server.target)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
    return result


def call_json(server: ServerProcess, *args: str) -> Any:
    result = call(server, *args, "--json")
    assert result.stderr == "", result.stderr
    return json.loads(result.stdout)


def test_train_prints_a_progress_line_per_epoch_and_a_summary(
    server: ServerProcess, client: me.Client
) -> None:
    assert client.list_models("clismall") == []
    result = call(
        server,
        "train",
        *("--model", "clismall", "--num-watchers", "200", "--epochs", "2", "--seed", "3"),
    )
    # Not a terminal: one whole line per epoch, no carriage-return bar, nothing else.
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    for epoch, line in enumerate(lines, start=1):
        assert re.search(rf"\bepoch {epoch}/2 loss \d+\.\d{{4}}\b", line), line
    summary = result.stdout.strip()
    assert summary.count("\n") == 0, summary
    assert "clismall v1" in summary
    assert "200 watchers x 80 movies" in summary
    assert "seed 3" in summary
    assert "2 epochs" in summary

    info = client.get_model(me.ModelRef("clismall", 1))
    assert (info.synthetic.num_watchers, info.synthetic.seed, info.training.epochs) == (200, 3, 2)


def test_train_json_is_the_new_model_info(server: ServerProcess, client: me.Client) -> None:
    result = call(
        server,
        "train",
        *("--model", "clijson", "--num-watchers", "150", "--epochs", "1", "--seed", "4"),
        "--json",
    )
    assert re.fullmatch(r".*\bepoch 1/1 loss \d+\.\d{4}\b.*\n", result.stderr), result.stderr
    data = json.loads(result.stdout)
    assert data["ref"] == {"name": "clijson", "version": 1}
    assert data["synthetic"] == {"num_watchers": 150, "num_movies": 80, "num_types": 10, "seed": 4}
    assert data["training"]["epochs"] == 1
    assert data["training"]["preset"] == "default"
    assert data["state"] == "ready"

    info = client.get_model(me.ModelRef("clijson", 1))
    assert data["create_time"] == info.create_time.isoformat()
    assert data["metrics"] == dict(info.metrics)
    assert data["num_movies"] == info.num_movies == NUM_MOVIES
    assert data["embedding_dim"] == info.embedding_dim
    assert data["age_mean"] == info.age_mean


def test_vector_prints_the_sdk_vector(server: ServerProcess, client: me.Client) -> None:
    printed = call(server, "vector", "3").stdout.split()
    expected = client.movie_vector(3)
    assert len(printed) == client.get_model().embedding_dim == len(expected)
    # Equal to the printed precision (%g: six significant digits).
    assert [float(x) for x in printed] == [float(f"{v:g}") for v in expected]
    np.testing.assert_allclose([float(x) for x in printed], expected, rtol=1e-5, atol=0)


def test_vector_all_rounded_json_has_a_row_per_movie(
    server: ServerProcess, client: me.Client
) -> None:
    rows = call_json(server, "vector", "--all", "--round", "2")
    _, matrix = client.movie_vectors()
    assert len(rows) == NUM_MOVIES
    assert [row["movie_id"] for row in rows] == list(range(NUM_MOVIES))
    got = np.array([row["vector"] for row in rows], dtype=np.float32)
    assert got.shape == matrix.shape
    np.testing.assert_array_equal(got, np.round(matrix, 2))
    # Printed as the decimals asked for (0.09), not float32 artefacts (0.0900000035...).
    raw = [x for row in rows for x in row["vector"]]
    assert all(x == round(x, 2) for x in raw)
    assert not np.array_equal(got, matrix), "--round 2 changed nothing"


def test_nearest_json_equals_the_sdk(server: ServerProcess, client: me.Client) -> None:
    neighbors = call_json(server, "nearest", "3", "--k", "4")
    expected = client.nearest_movies(3, k=4)
    assert len(neighbors) == 4
    assert [n["movie_id"] for n in neighbors] == [n.movie_id for n in expected]
    assert [n["score"] for n in neighbors] == [n.score for n in expected]
    assert 3 not in [n["movie_id"] for n in neighbors]


def test_nearest_metric_and_exclude(server: ServerProcess, client: me.Client) -> None:
    first = client.nearest_movies(3, k=2, metric="euclidean")
    skip = [first[0].movie_id, first[1].movie_id]
    neighbors = call_json(
        server,
        "nearest",
        "3",
        *("--k", "5", "--metric", "euclidean", "--exclude", ",".join(map(str, skip))),
    )
    expected = client.nearest_movies(3, k=5, metric="euclidean", exclude=skip)
    assert [n["movie_id"] for n in neighbors] == [n.movie_id for n in expected]
    assert not set(skip) & {n["movie_id"] for n in neighbors}
    assert all(n["score"] <= 0 for n in neighbors)  # negated distances


def test_reconstruct_liked_json(server: ServerProcess, client: me.Client) -> None:
    data = call_json(
        server,
        "reconstruct",
        *("--liked", "0,1,2", "--age", "30", "--education", "1", "--top-k", "3"),
    )
    probabilities = np.array(data["probabilities"], dtype=np.float32)
    assert probabilities.shape == (NUM_MOVIES,)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    recommended = [r["movie_id"] for r in data["recommendations"]]
    assert len(recommended) == 3
    assert not {0, 1, 2} & set(recommended)
    # The three likeliest movies not liked, best first, with their probabilities.
    candidates = np.setdiff1d(np.arange(NUM_MOVIES), [0, 1, 2])
    best = candidates[np.argsort(-probabilities[candidates], kind="stable")][:3]
    assert recommended == best.tolist()
    assert [r["probability"] for r in data["recommendations"]] == [
        float(probabilities[m]) for m in recommended
    ]

    expected = client.reconstruct([0, 1, 2], age_years=30, education=1, top_k=3)
    np.testing.assert_array_equal(probabilities, expected.probabilities)
    assert recommended == [r.movie_id for r in expected.recommendations]


@pytest.mark.parametrize("layout", ["one-line", "one-per-line"])
def test_reconstruct_ratings_file_equals_liked(
    server: ServerProcess, tmp_path: Path, layout: str
) -> None:
    liked = [5, 17, 42]
    ratings = ["1" if m in liked else "0" for m in range(NUM_MOVIES)]
    path = tmp_path / "ratings.csv"
    path.write_text((",".join(ratings) if layout == "one-line" else "\n".join(ratings)) + "\n")
    common = ("--age", "41.5", "--education", "2", "--top-k", "4")
    from_file = call_json(server, "reconstruct", "--ratings-file", str(path), *common)
    from_liked = call_json(server, "reconstruct", "--liked", ",".join(map(str, liked)), *common)
    assert len(from_file["probabilities"]) == NUM_MOVIES
    assert len(from_file["recommendations"]) == 4
    assert from_file == from_liked


def test_reconstruct_text_output(server: ServerProcess) -> None:
    lines = call(
        server, "reconstruct", "--liked", "0,1,2", "--age", "30", "--education", "1", "--top-k", "3"
    ).stdout.splitlines()
    assert lines[0].startswith("probabilities: ")
    assert len(lines[0].split()[1:]) == NUM_MOVIES
    assert lines[1].split() == ["movie_id", "probability"]
    assert len(lines) == 2 + 3
    assert not {0, 1, 2} & {int(line.split()[0]) for line in lines[2:]}


def test_models_lists_the_default_model(server: ServerProcess, client: me.Client) -> None:
    sdk = client.list_models()
    text = call(server, "models").stdout.splitlines()
    data = call_json(server, "models")

    assert [(m["ref"]["name"], m["ref"]["version"]) for m in data] == [
        (m.name, m.version) for m in sdk
    ]
    default = next(m for m in data if m["ref"] == {"name": "default", "version": 1})
    assert default["synthetic"] == {
        "num_watchers": 1000,
        "num_movies": 80,
        "num_types": 10,
        "seed": 42,
    }
    assert default["training"]["epochs"] == 24
    assert default["state"] == "ready"
    assert set(default["metrics"]) >= {"loss", "train_seconds", "neighbour_purity"}

    assert len(text) == len(sdk)
    line = next(x for x in text if x.startswith("default v1 "))
    assert "1000 watchers x 80 movies" in line
    assert "seed 42" in line
    assert re.search(r"\bloss=\d", line), line

    only = call_json(server, "models", "--name", "default")
    assert {m["ref"]["name"] for m in only} == {"default"}


def _assert_clean_error(result: subprocess.CompletedProcess[str], code: str, words: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {code}: "), result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_unknown_movie_is_not_found(server: ServerProcess) -> None:
    result = run_cli("nearest", "999", "--target", server.target)
    _assert_clean_error(result, "NOT_FOUND", "movie 999")


@pytest.mark.parametrize(
    "args",
    [["nearest", "--target", "{target}", "--", "-1"], ["nearest", "-1", "--target", "{target}"]],
    ids=["double-dash", "bare"],
)
def test_negative_movie_is_invalid_argument(server: ServerProcess, args: list[str]) -> None:
    result = run_cli(*[a.replace("{target}", server.target) for a in args])
    _assert_clean_error(result, "INVALID_ARGUMENT", "movie_id")


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["vector", "3", "--model", "nosuchmodel"], "NOT_FOUND", "nosuchmodel"),
        (["vector", "3", "--version", "99"], "NOT_FOUND", "no version 99"),
        (["nearest", "3", "--k", "-1"], "INVALID_ARGUMENT", "k"),
        (
            ["reconstruct", "--liked", "1", "--age", "200", "--education", "1"],
            "INVALID_ARGUMENT",
            "age_years",
        ),
        (
            ["train", "--model", "../x", "--num-watchers", "100", "--epochs", "1"],
            "INVALID_ARGUMENT",
            "model_name",
        ),
    ],
    ids=["unknown-model", "unknown-version", "negative-k", "age-out-of-range", "bad-model-name"],
)
def test_other_server_errors_are_one_line(
    server: ServerProcess, args: list[str], code: str, words: str
) -> None:
    _assert_clean_error(run_cli(*args, "--target", server.target), code, words)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--seed", "-1", "--epochs", "1"],
        ["nearest", "3000000000"],
        ["vector", "-5000000000"],
    ],
    ids=["negative-seed", "id-beyond-int32", "id-below-int32"],
)
def test_values_the_wire_cannot_carry_are_refused_in_one_line(
    server: ServerProcess, args: list[str]
) -> None:
    result = run_cli(*args, "--target", server.target)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_server_is_unavailable() -> None:
    # A port nobody listens on: bind one, note it, close it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_cli("models", "--target", f"127.0.0.1:{port}", "--timeout", "5")
    _assert_clean_error(result, "UNAVAILABLE", "")


def _help(*command: str) -> str:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_top_level_help_names_every_command() -> None:
    text = _help()
    assert text.startswith("usage: movie-embeddings")
    for command in OPTIONS:
        assert re.search(rf"^\s+{command}\s", text, re.MULTILINE), command


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_command_help_documents_every_option(command: str) -> None:
    text = _help(command)
    assert text.startswith(f"usage: movie-embeddings {command}")
    assert "-h, --help" in text
    for option in OPTIONS[command]:
        # Once in the usage line and once in the list with its description.
        found = re.findall(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)
        assert len(found) >= 2, f"{command} --help does not document {option}"


def test_documented_options_are_all_the_parser_has() -> None:
    """Guards the list above: an option added to the CLI must be added (and documented) here."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    assert sorted(subparsers.choices) == sorted(OPTIONS)
    for name, sub in subparsers.choices.items():
        declared = set()
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
            declared.update(
                [o for o in action.option_strings if o.startswith("--")] or [action.metavar]
            )
        assert declared == set(OPTIONS[name]), name


def test_plot_writes_a_png_of_the_vectors_and_the_loss_curves(
    server: ServerProcess, tmp_path: Path
) -> None:
    import matplotlib.image

    out = tmp_path / "default.png"
    result = call(server, "plot", "--output", str(out))
    assert result.stdout.strip() == f"wrote {out}"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    height, width = image.shape[:2]
    assert (width, height) == (1300, 600)  # 13 x 6 inches at 100 dpi: both panels
    assert image.std() > 0.05  # drawn on, not a blank canvas


def test_health_exits_0_only_when_serving(server: ServerProcess) -> None:
    assert call(server, "health").stdout == "SERVING\n"
    assert call_json(
        server, "health", "--service", "movie_embeddings.v1.MovieEmbeddingService"
    ) == {"status": "SERVING"}
    unknown = run_cli("health", "--target", server.target, "--service", "no.such.Service")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: NOT_FOUND")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    down = run_cli("health", "--target", dead, "--timeout", "2")
    assert down.returncode == 1
    assert down.stderr.startswith("error: UNAVAILABLE")
