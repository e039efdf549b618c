"""The `movie-embeddings` CLI as a user runs it: real subprocesses against a real server process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CLI, TENSORFLOW_START, ServerProcess, wait_until

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
    "--max-message-bytes",
]
WITH_MODEL = [*COMMON, "--model", "--version", "--label"]
FILTERS = ["--min-likes", "--genre", "--exclude-genre"]  # the answers' filters
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
        "--max-dataset-ratings",
        "--max-concurrent-imports",
        "--grace-seconds",
        "--batch-wait-us",
        "--max-batch-rows",
        "--max-message-bytes",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--auth-token",
        "--auth-all",
        "--metrics-port",
        "--poll-seconds",
        "--keep-versions",
        "--server-id",
        "--access-log",
        "--log-level",
    ],
    "train": [
        *COMMON,
        "--model",
        "--store",
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
        "--input-dropout",
        "--dataset",
        "--dataset-version",
        "--like-threshold",
        "--min-likes-per-watcher",
        "--min-likes-per-movie",
        "--holdout-fraction",
    ],
    "import": [
        *COMMON,
        "--name",
        "--format",
        "--description",
        "--movies",
        "--watchers",
        "--sep",
        "--watcher-col",
        "--movie-col",
        "--rating-col",
        "--timestamp-col",
        "--movie-id-col",
        "--title-col",
        "--genres-col",
        "--watcher-id-col",
        "--age-col",
        "--education-col",
        "PATH",
    ],
    "datasets": [*COMMON, "--version", "NAME"],
    "vector": [*WITH_MODEL, "--all", "--round", "MOVIE_ID"],
    "nearest": [*WITH_MODEL, "--k", "--metric", "--exclude", "--title", *FILTERS, "MOVIE_ID"],
    "search": [*WITH_MODEL, "--limit", "TEXT"],
    "recommend": [*WITH_MODEL, "--top-k", *FILTERS, "--because", "WATCHER_ID"],
    "reconstruct": [
        *WITH_MODEL,
        "--liked",
        "--ratings-file",
        "--liked-titles",
        "--all-probabilities",
        "--age",
        "--education",
        "--top-k",
        *FILTERS,
        "--because",
    ],
    "models": [*COMMON, "--name", "--version", "--remove", "ACTION"],
    "health": [*COMMON, "--service", "--wait"],
    "plot": [*WITH_MODEL, "--output"],
    "export": [*WITH_MODEL, "--format", "--output"],
}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=None if env is None else {**os.environ, **env},
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
    name = f"clismall-{uuid.uuid4().hex[:8]}"  # new to the shared server
    result = call(
        server,
        "train",
        *("--model", name, "--num-watchers", "200", "--epochs", "2", "--seed", "3"),
    )
    # Not a terminal: one whole line per epoch, no carriage-return bar, nothing else.
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    for epoch, line in enumerate(lines, start=1):
        assert re.search(rf"\bepoch {epoch}/2 loss \d+\.\d{{4}}\b", line), line
    summary, given, filled = result.stdout.splitlines()
    assert f"{name} v1" in summary
    assert "200 watchers x 80 movies" in summary
    assert "seed 3" in summary
    assert "2 epochs" in summary
    # Every setting, as the server resolved it: those given, and those the preset filled in.
    assert given == "  given: epochs 2, num_watchers 200, seed 3"
    assert filled.startswith("  filled in by preset default: embedding_dim 5, hidden_units 32, ")
    for setting in ("batch_size 64", "learning_rate 0.02", "learning_rate_schedule cosine"):
        assert f" {setting}," in filled, filled
    assert filled.endswith(", num_movies 80, num_types 10"), filled

    info = client.get_model(me.ModelRef(name, 1))
    assert (info.synthetic.num_watchers, info.synthetic.seed, info.training.epochs) == (200, 3, 2)


def test_train_on_a_terminal_draws_live_bars_then_the_summary(server: ServerProcess) -> None:
    name = f"clibars-{uuid.uuid4().hex[:8]}"  # new to the shared server
    # FORCE_COLOR: rich takes stderr for a terminal, as it would be in a shell.
    result = run_cli(
        "train",
        *("--model", name, "--num-watchers", "200", "--epochs", "2", "--seed", "3"),
        *("--target", server.target),
        env={"FORCE_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "\x1b[" in result.stderr  # drawn, not plain lines
    assert re.search(r"epoch 2/2 loss \d+\.\d{4}", result.stderr), result.stderr
    assert result.stdout.startswith(f"trained {name} v1 ") and result.stdout.count("\n") == 3


def test_train_json_is_the_new_model_info(server: ServerProcess, client: me.Client) -> None:
    name = f"clijson-{uuid.uuid4().hex[:8]}"  # new to the shared server
    result = call(
        server,
        "train",
        *("--model", name, "--num-watchers", "150", "--epochs", "1", "--seed", "4"),
        "--json",
    )
    assert re.fullmatch(r".*\bepoch 1/1 loss \d+\.\d{4}\b.*\n", result.stderr), result.stderr
    data = json.loads(result.stdout)
    assert data["ref"] == {"name": name, "version": 1, "label": ""}
    assert data["synthetic"] == {"num_watchers": 150, "num_movies": 80, "num_types": 10, "seed": 4}
    assert data["training"]["epochs"] == 1
    assert data["training"]["preset"] == "default"
    assert data["state"] == "ready"

    info = client.get_model(me.ModelRef(name, 1))
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
        "--all-probabilities",
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
    common = ("--age", "41.5", "--education", "2", "--top-k", "4", "--all-probabilities")
    from_file = call_json(server, "reconstruct", "--ratings-file", str(path), *common)
    from_liked = call_json(server, "reconstruct", "--liked", ",".join(map(str, liked)), *common)
    assert len(from_file["probabilities"]) == NUM_MOVIES
    assert len(from_file["recommendations"]) == 4
    assert from_file == from_liked


def test_reconstruct_text_output(server: ServerProcess) -> None:
    common = ("reconstruct", "--liked", "0,1,2", "--age", "30", "--education", "1", "--top-k", "3")
    lines = call(server, *common, "--all-probabilities").stdout.splitlines()
    assert lines[0].startswith("probabilities: ")
    assert len(lines[0].split()[1:]) == NUM_MOVIES
    assert lines[1].split() == ["movie_id", "probability"]
    assert len(lines) == 2 + 3
    assert not {0, 1, 2} & {int(line.split()[0]) for line in lines[2:]}
    # By default only the recommendations are asked for, and printed.
    assert call(server, *common).stdout.splitlines() == lines[1:]
    assert call_json(server, *common)["probabilities"] == []


def test_models_lists_the_default_model(server: ServerProcess, client: me.Client) -> None:
    sdk = client.list_models()
    text = call(server, "models").stdout.splitlines()
    data = call_json(server, "models")

    assert [(m["ref"]["name"], m["ref"]["version"]) for m in data] == [
        (m.name, m.version) for m in sdk
    ]
    default = next(m for m in data if m["ref"] == {"name": "default", "version": 1, "label": ""})
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
    _assert_clean_error(result, "UNAVAILABLE", f"is the server running at 127.0.0.1:{port}?")


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


def test_only_client_commands_take_their_target_from_the_environment() -> None:
    env = {"MOVIE_EMBEDDINGS_TARGET": "nowhere:99999"}  # not even a valid target
    serve = run_cli("serve", "--help", env=env)
    assert serve.returncode == 0 and "MOVIE_EMBEDDINGS_TARGET" not in serve.stdout
    models = run_cli("models", env=env)
    _assert_usage_error(models, "argument --target: a port is 1..65535, got '99999'")


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


# --- answers like a tool: versions, ports, targets, files, usage mistakes ----------------------


def _assert_usage_error(result: subprocess.CompletedProcess[str], words: str) -> None:
    """A mistake in the command line: one `error:` line, exit code 2, nothing else."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("error: "), result.stderr
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_version_is_the_sdk_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"movie-embeddings {me.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", me.__version__)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["serve", "--port", "99999"], "argument --port: a port is 1..65535"),
        (["serve", "--port", "-1"], "argument --port"),
        (["serve", "--metrics-port", "65536"], "argument --metrics-port"),
        (["models", "--target", "localhost:0"], "a port is 1..65535, got '0'"),
        (["models", "--target", "localhost:http"], "argument --target"),
        (["train", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
        (["train", "--learning-rate", "nan"], "argument --learning-rate"),
        (["train", "--like-threshold", "3"], "--like-threshold needs --dataset"),
        (["train", "--dataset", "ml", "--num-watchers", "9"], "--num-watchers is for generated"),
        (["train", "--embedding-initializer", "ones"], "invalid choice: 'ones'"),
        (["nearest"], "give MOVIE_ID or --title"),
        (["nearest", "3", "--title", "toy"], "give MOVIE_ID or --title"),
        (["vector"], "give MOVIE_ID or --all"),
        (["datasets", "delete"], "datasets delete: give one NAME"),
        (["datasets", "a", "b"], "one NAME at most"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_mistakes_are_one_line(args: list[str], words: str) -> None:
    """Each is refused before any call (no server runs at the default target here)."""
    _assert_usage_error(run_cli(*args), words)


def test_a_busy_metrics_port_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run_cli(
            "serve", "--port", "0", "--metrics-port", str(port), "--data-dir", str(tmp_path)
        )
    assert result.returncode == 2, result.stderr
    assert re.search(r"^error: .*in use$", result.stderr, re.MULTILINE), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost", "localhost:50051"),
        ("10.0.0.7:6000", "10.0.0.7:6000"),
        ("[::1]", "[::1]:50051"),
        ("[::1]:7000", "[::1]:7000"),
        ("::1", "[::1]:50051"),
        ("a:1, b", "a:1,b:50051"),
        ("dns:///svc.local:50051", "dns:///svc.local:50051"),
    ],
)
def test_a_target_without_a_port_means_50051(given: str, expected: str) -> None:
    assert build_parser().parse_args(["models", "--target", given]).target == expected


def test_help_shows_the_real_defaults() -> None:
    from movie_embeddings_server import config

    train = " ".join(_help("train").split())  # argparse wraps lines: compare words
    synthetic = config.resolve_training({}, source="synthetic")
    dataset = config.resolve_training({}, source="dataset")
    notebook = config.resolve_training({"preset": "notebook"})
    assert (
        f"(default: {synthetic.epochs} on generated data, {dataset.epochs} on a dataset; "
        f"notebook preset {notebook.epochs})"
    ) in train
    assert f"(default: {config.SyntheticSpec().num_watchers})" in train
    assert f"(default: {config.DatasetTrainingSpec().like_threshold:g})" in train

    serve = " ".join(_help("serve").split())
    assert "--max-dataset-ratings MAX_DATASET_RATINGS cap on the ratings" in serve
    assert "(default: 50000000)" in serve
    reconstruct = " ".join(_help("reconstruct").split())
    assert "`movie_id,rating`" in reconstruct and "header" in reconstruct


def test_serve_defaults_are_the_server_config_defaults() -> None:
    """The flags' defaults are written in the CLI (parsing must not load the server); they
    must be ServerConfig's."""
    from movie_embeddings_server.serving.app import ServerConfig

    args = build_parser().parse_args(["serve"])
    expected = ServerConfig(data_dir=Path("x"))
    for name in (
        "host",
        "port",
        "max_workers",
        "max_concurrent_trains",
        "grace_seconds",
        "max_message_bytes",
        "max_dataset_ratings",
        "max_concurrent_imports",
        "batch_wait_us",
        "max_batch_rows",
        "metrics_port",
        "poll_seconds",
        "server_id",
        "auth_all",
        "access_log",
        "keep_versions",
    ):
        assert getattr(args, name) == getattr(expected, name), name


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_ratings_file_that_is_not_a_file_is_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "ratings.csv"
    if kind == "directory":
        path.mkdir()
    result = run_cli(
        "reconstruct", "--ratings-file", str(path), "--age", "30", "--education", "1",
        "--target", "127.0.0.1:1",
    )  # fmt: skip
    _assert_usage_error(result, str(path))


def test_plot_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "dir" / "x.png"
    _assert_usage_error(
        run_cli("plot", "--output", str(out), "--target", "127.0.0.1:1"),
        f"no directory {out.parent}",
    )


def test_import_of_a_missing_path_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "ml-latest-small"
    result = run_cli("import", str(path), "--name", "x", "--target", "127.0.0.1:1")
    _assert_usage_error(result, f"no such file or directory: {path}")


NEGATIVE_ZERO = re.compile(r"-0\.0*(?![\d])")  # "-0." or "-0.00", not "-0.004"


def test_reconstruct_needs_the_features_the_model_takes(server: ServerProcess) -> None:
    result = run_cli("reconstruct", "--liked", "1", "--education", "1", "--target", server.target)
    _assert_usage_error(result, "reconstruct: default v1 needs --age")


def test_kernel_text_never_shows_negative_zero() -> None:
    from movie_embeddings_server.cli.query import _kernel_text

    matrix = np.array([[-0.0, -1e-12, 0.25], [-0.004, 1.0, -0.5]], dtype=np.float32)
    text = _kernel_text(matrix, None)
    assert not NEGATIVE_ZERO.search(text) and "-0.004" in text, text
    rounded = _kernel_text(np.round(matrix.astype(np.float64), 2), 2)
    assert not NEGATIVE_ZERO.search(rounded) and "-0.5" in rounded, rounded


def test_vector_all_prints_no_negative_zero(server: ServerProcess) -> None:
    text = call(server, "vector", "--all", "--round", "3").stdout
    assert text.startswith("array([[") and not NEGATIVE_ZERO.search(text)


def test_plot_without_an_extension_reports_the_file_written(
    server: ServerProcess, tmp_path: Path
) -> None:
    result = call(server, "plot", "--output", str(tmp_path / "noext"))
    assert result.stdout == f"wrote {tmp_path / 'noext.png'}\n"
    assert (tmp_path / "noext.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "noext").exists()


@pytest.mark.parametrize(
    "text",
    [
        "movie_id,rating\n5,1\n17,1\n42,1\n",  # pairs under a header
        "5,1\n17,1.0\n42,1\n3,0\n",  # pairs; a 0 says nothing new
        "m0,m1\n" + ",".join("1" if m in (5, 17, 42) else "0" for m in range(NUM_MOVIES)) + "\n",
    ],
    ids=["pairs-header", "pairs", "header-then-values"],
)
def test_reconstruct_ratings_file_layouts(server: ServerProcess, tmp_path: Path, text: str) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(text)
    common = ("--age", "33", "--education", "2", "--top-k", "4")
    from_file = call_json(server, "reconstruct", "--ratings-file", str(path), *common)
    assert from_file == call_json(server, "reconstruct", "--liked", "5,17,42", *common)


def test_reconstruct_ratings_file_fractional_pairs(
    server: ServerProcess, client: me.Client, tmp_path: Path
) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("movie_id,rating\n7,0.5\n70,1\n")
    got = call_json(
        server,
        "reconstruct",
        "--ratings-file",
        str(path),
        "--age",
        "33",
        "--education",
        "2",
        "--all-probabilities",
    )
    dense = np.zeros(NUM_MOVIES, np.float32)
    dense[[7, 70]] = [0.5, 1.0]
    expected = client.reconstruct(ratings=dense, age_years=33, education=2)
    np.testing.assert_array_equal(
        np.array(got["probabilities"], np.float32), expected.probabilities
    )


def test_ctrl_c_on_train_cancels_and_stores_nothing(
    server: ServerProcess, client: me.Client
) -> None:
    name = f"clicancel-{uuid.uuid4().hex[:8]}"  # new to the shared server
    train = subprocess.Popen(
        [*CLI, "train", "--model", name, "--epochs", "300", "--target", server.target],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert train.stderr is not None
        first = train.stderr.readline()  # the first epoch's line: training is under way
        assert first.startswith("epoch 1/300 "), first
        train.send_signal(signal.SIGINT)
        out, err = train.communicate(timeout=CLI_TIMEOUT)
    finally:
        train.kill()
    assert train.returncode == 130, err
    assert (out, err) == ("", "cancelled; no version stored\n")

    # The server has one training slot: a new Train gets it only once the cancelled one ended.
    def train_again() -> bool:
        try:
            list(client.train(name, num_watchers=100, epochs=1, seed=1))
        except me.ResourceExhausted:
            return False
        return True

    wait_until(train_again, 20, "the cancelled training to end")
    (only,) = client.list_models(name)
    assert (only.version, only.training.epochs) == (1, 1)


# --- versions: delete, label, and queries by label ----------------------------------------------


def test_models_label_query_by_label_and_delete(server: ServerProcess, client: me.Client) -> None:
    name = f"clilabel-{uuid.uuid4().hex[:8]}"  # new to the shared server
    for seed in (1, 2):
        list(client.train(name, num_watchers=100, epochs=1, seed=seed))
    labelled = call(server, "models", "label", name, "stable", "--version", "1")
    assert labelled.stdout == f"labels of {name}: stable -> v1\n"
    assert call_json(server, "models", "label", name, "canary", "--version", "2") == {
        "canary": 2,
        "stable": 1,
    }
    by_label = call(server, "vector", "3", "--model", name, "--label", "stable").stdout
    assert by_label == call(server, "vector", "3", "--model", name, "--version", "1").stdout
    listed = call(server, "models", "--name", name).stdout.splitlines()
    assert [x.split("  ")[0] for x in listed] == [f"{name} v1 [stable]", f"{name} v2 [canary]"]
    assert [m["labels"] for m in call_json(server, "models", "--name", name, "--version", "2")] == [
        ["canary"]
    ]

    refused = run_cli("models", "delete", name, "--version", "1", "--target", server.target)
    _assert_clean_error(refused, "FAILED_PRECONDITION", "version 1 is labelled stable")
    mismatch = run_cli(
        "vector", "3", "--model", name, "--label", "stable", "--version", "2",
        "--target", server.target,
    )  # fmt: skip
    _assert_clean_error(mismatch, "INVALID_ARGUMENT", "'stable' names version 1")
    removed = call(server, "models", "label", name, "stable", "--remove")
    assert removed.stdout == f"labels of {name}: canary -> v2\n"
    assert call(server, "models", "delete", name, "--version", "1").stdout == f"deleted {name} v1\n"
    call(server, "models", "label", name, "canary", "--remove")
    assert call_json(server, "models", "delete", name)[0]["ref"]["version"] == 2
    assert client.list_models(name) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["models", "label", "m", "stable"], "give --version N (N >= 1) or --remove"),
        (["models", "label", "m", "stable", "--version", "2", "--remove"], "or --remove"),
        (["models", "label", "m", "stable", "--version", "0"], "--version must be >= 1"),
        (["models", "delete"], "expected `delete NAME` or `label NAME LABEL`"),
        (["models", "rename", "m"], "got 'rename m'"),
        (["models", "--remove"], "--remove goes with `label NAME LABEL`"),
    ],
)
def test_models_mistakes_are_one_line(args: list[str], words: str) -> None:
    _assert_usage_error(run_cli(*args, "--target", "127.0.0.1:1"), words)


def test_health_wait_returns_at_once_when_serving_and_gives_up_on_no_server(
    server: ServerProcess,
) -> None:
    assert call(server, "health", "--wait", "30").stdout == "SERVING\n"
    down = run_cli("health", "--wait", "1", "--target", f"127.0.0.1:{_free_port()}")
    assert (down.returncode, down.stdout) == (1, "UNAVAILABLE\n")
    assert down.stderr == "not SERVING within 1 s (last: UNAVAILABLE)\n"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--dataset", "nope"], "NOT_FOUND", "dataset 'nope' not found"),
        (["--model", "Bad"], "INVALID_ARGUMENT", "model_name: must match"),
        (["--num-types", "500"], "INVALID_ARGUMENT", "synthetic.num_types: must be <= num_movies"),
    ],
)
def test_train_into_a_store_refuses_as_a_server_would(
    tmp_path: Path, args: list[str], code: str, words: str
) -> None:
    _assert_clean_error(run_cli("train", "--store", str(tmp_path), *args), code, words)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["datasets"])  # nothing trained


def test_train_into_a_missing_store_makes_it_quietly(tmp_path: Path) -> None:
    store = tmp_path / "new" / "store"
    result = run_cli(
        "train", "--store", str(store), "--model", "m", "--num-watchers", "100", "--epochs", "1"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("trained m v1 "), result.stdout
    assert (store / "m" / "1").is_dir()
    assert not re.search(TENSORFLOW_START, result.stderr, re.IGNORECASE), result.stderr


def test_train_into_a_store_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run_cli("train", "--store", str(tmp_path / "file"))
    _assert_usage_error(result, f"--store {tmp_path / 'file'}: File exists")
