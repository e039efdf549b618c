"""grpcurl against a real server process, by server reflection only (no .proto at hand)."""

from __future__ import annotations

import json
import shlex
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ServerProcess, assert_model_info_json, grpcurl_path

import movie_embeddings as me

SERVICE = "movie_embeddings.v1.MovieEmbeddingService"
RPCS = [
    "Train",
    "GetMovieVector",
    "BatchGetMovieVectors",
    "NearestMovies",
    "Reconstruct",
    "ListModels",
    "GetModel",
    "ImportDataset",
    "ListDatasets",
    "GetDataset",
    "DeleteDataset",
    "SearchMovies",
    "DeleteModel",
    "SetModelLabel",
    "StreamMovieVectors",
]
# Written as a user would type them; the tests put the server's address in place of TARGET.
TARGET = "localhost:50051"
GRPCURL_TIMEOUT = 120.0  # seconds: Train streams a small training

# (description, arguments after `grpcurl`), ready to be copied into the README.
GRPCURL_COMMANDS: list[tuple[str, list[str]]] = [
    ("list services", ["-plaintext", TARGET, "list"]),
    ("describe the service", ["-plaintext", TARGET, "describe", SERVICE]),
    (
        "describe a request message",
        ["-plaintext", TARGET, "describe", "movie_embeddings.v1.NearestMoviesRequest"],
    ),
    (
        "get a movie vector",
        ["-plaintext", "-d", '{"movieId": 3}', TARGET, f"{SERVICE}/GetMovieVector"],
    ),
    (
        "get several movie vectors",
        [
            "-plaintext",
            "-d",
            '{"movieIds": [3, 0, 3, 79]}',
            TARGET,
            f"{SERVICE}/BatchGetMovieVectors",
        ],
    ),
    (
        "stream every movie vector, in pages (a catalogue of any size)",
        [
            "-plaintext",
            "-d",
            '{"pageSize": 50}',
            TARGET,
            f"{SERVICE}/StreamMovieVectors",
        ],
    ),
    (
        "nearest movies to a movie",
        ["-plaintext", "-d", '{"movieId": 3, "k": 5}', TARGET, f"{SERVICE}/NearestMovies"],
    ),
    (
        "nearest movies to a vector",
        [
            "-plaintext",
            "-d",
            '{"vector": {"values": [0.1, 0.2, -0.3, 0.4, 0.5]}, "k": 5,'
            ' "metric": "METRIC_EUCLIDEAN"}',
            TARGET,
            f"{SERVICE}/NearestMovies",
        ],
    ),
    (
        "reconstruct a watcher",
        [
            "-plaintext",
            "-d",
            '{"watchers": [{"likedMovieIds": [0, 1, 2], "ageYears": 30, "education": 1}],'
            ' "topK": 3}',
            TARGET,
            f"{SERVICE}/Reconstruct",
        ],
    ),
    ("list models", ["-plaintext", "-d", "{}", TARGET, f"{SERVICE}/ListModels"]),
    (
        "get a model version",
        [
            "-plaintext",
            "-d",
            '{"model": {"name": "default", "version": "1"}}',
            TARGET,
            f"{SERVICE}/GetModel",
        ],
    ),
    (
        "train a model (server stream)",
        [
            "-plaintext",
            "-d",
            '{"modelName":"grpcurlmodel","synthetic":{"numWatchers":200,"seed":"5"},'
            '"training":{"epochs":3}}',
            TARGET,
            f"{SERVICE}/Train",
        ],
    ),
    (
        "label a model version",
        [
            "-plaintext",
            "-d",
            '{"name": "scratch", "label": "stable", "version": "2"}',
            TARGET,
            f"{SERVICE}/SetModelLabel",
        ],
    ),
    (
        "query the version a label names",
        [
            "-plaintext",
            "-d",
            '{"model": {"name": "scratch", "label": "stable"}, "movieId": 3}',
            TARGET,
            f"{SERVICE}/GetMovieVector",
        ],
    ),
    (
        "delete a model version",
        [
            "-plaintext",
            "-d",
            '{"model": {"name": "scratch", "version": "1"}}',
            TARGET,
            f"{SERVICE}/DeleteModel",
        ],
    ),
    (
        "remove a label",
        [
            "-plaintext",
            "-d",
            '{"name": "scratch", "label": "stable"}',
            TARGET,
            f"{SERVICE}/SetModelLabel",
        ],
    ),
    (
        "delete every version of a model",
        ["-plaintext", "-d", '{"model": {"name": "scratch"}}', TARGET, f"{SERVICE}/DeleteModel"],
    ),
    (
        "import a dataset (client stream, from a file)",
        ["-plaintext", "-d", "@", TARGET, f"{SERVICE}/ImportDataset"],
    ),
    ("list datasets", ["-plaintext", "-d", '{"name": "tiny"}', TARGET, f"{SERVICE}/ListDatasets"]),
    (
        "train on a dataset",
        [
            "-plaintext",
            "-d",
            '{"modelName": "tinymodel", "dataset": {"dataset": {"name": "tiny"},'
            ' "minLikesPerWatcher": 1, "seed": "1"}, "training": {"epochs": 2}}',
            TARGET,
            f"{SERVICE}/Train",
        ],
    ),
    (
        "search movies by title",
        [
            "-plaintext",
            "-d",
            '{"model": {"name": "tinymodel"}, "query": "miserables"}',
            TARGET,
            f"{SERVICE}/SearchMovies",
        ],
    ),
    (
        "nearest movies by a dataset's own id",
        [
            "-plaintext",
            "-d",
            '{"model": {"name": "tinymodel"}, "movieId": 40, "k": 2}',
            TARGET,
            f"{SERVICE}/NearestMovies",
        ],
    ),
    (
        "recommendations for liked movies",
        [
            "-plaintext",
            "-d",
            '{"model": {"name": "tinymodel"}, "watchers": [{"likedMovieIds": [10]}], "topK": 2,'
            ' "recommendationsOnly": true}',
            TARGET,
            f"{SERVICE}/Reconstruct",
        ],
    ),
    (
        "recommendations for a watcher of the dataset, by its id",
        [
            "-plaintext",
            "-d",
            '{"model": {"name": "tinymodel"}, "watchers": [{"watcherId": "2"}], "topK": 2,'
            ' "recommendationsOnly": true}',
            TARGET,
            f"{SERVICE}/Reconstruct",
        ],
    ),
    (
        "nearest movies, leaving a genre out",
        [
            "-plaintext",
            "-d",
            '{"model": {"name": "tinymodel"}, "movieId": 40, "k": 2,'
            ' "filter": {"excludeGenres": ["Children"]}}',
            TARGET,
            f"{SERVICE}/NearestMovies",
        ],
    ),
    (
        "recommendations of a genre, with the liked movies that led to them",
        [
            "-plaintext",
            "-d",
            '{"model": {"name": "tinymodel"}, "watchers": [{"watcherId": "2"}], "topK": 2,'
            ' "recommendationsOnly": true, "filter": {"genres": ["drama"]}, "because": true}',
            TARGET,
            f"{SERVICE}/Reconstruct",
        ],
    ),
    (
        "delete a dataset",
        [
            "-plaintext",
            "-d",
            '{"dataset": {"name": "tiny"}}',
            TARGET,
            f"{SERVICE}/DeleteDataset",
        ],
    ),
    (
        "error: unknown movie",
        ["-plaintext", "-d", '{"movieId": 999}', TARGET, f"{SERVICE}/GetMovieVector"],
    ),
    (
        "error: negative movie id",
        ["-plaintext", "-d", '{"movieId": -1}', TARGET, f"{SERVICE}/GetMovieVector"],
    ),
    ("health check", ["-plaintext", TARGET, "grpc.health.v1.Health/Check"]),
    (
        "health check of the service",
        [
            "-plaintext",
            "-d",
            f'{{"service": "{SERVICE}"}}',
            TARGET,
            "grpc.health.v1.Health/Check",
        ],
    ),
]
COMMANDS = dict(GRPCURL_COMMANDS)
assert len(COMMANDS) == len(GRPCURL_COMMANDS), "descriptions must be unique"
# 12 watchers rate 4 movies of a catalogue with its own ids: the even ones like 10 and 20 (5
# stars), the odd ones 30 and 40; each rates the other two 1 star. One JSON message a line.
_LIKES = {w: (10, 20) if w % 2 == 0 else (30, 40) for w in range(1, 13)}
IMPORT_JSON = "\n".join(
    json.dumps(message, ensure_ascii=False)
    for message in [
        {"header": {"name": "tiny", "description": "typed by hand"}},
        {
            "movies": {
                "movieIds": [10, 20, 30, 40],
                "titles": [
                    "Toy Story (1995)",
                    "Babe (1995)",
                    "Heat (1995)",
                    "Misérables, Les (1995)",
                ],
                "genres": ["Animation|Children", "Children|Drama", "Action|Crime", "Drama|War"],
            }
        },
        {
            "ratings": {
                "watcherIds": [w for w in _LIKES for _ in range(4)],
                "movieIds": [10, 20, 30, 40] * len(_LIKES),
                "ratings": [5 if m in _LIKES[w] else 1 for w in _LIKES for m in (10, 20, 30, 40)],
            }
        },
    ]
)
STDIN = {"import a dataset (client stream, from a file)": ("import.json", IMPORT_JSON)}


def grpcurl(server: ServerProcess, description: str) -> subprocess.CompletedProcess[str]:
    args = [server.target if a == TARGET else a for a in COMMANDS[description]]
    assert "-proto" not in args and "-import-path" not in args  # reflection only
    given = STDIN.get(description)
    return subprocess.run(
        [grpcurl_path(), *args],
        capture_output=True,
        text=True,
        timeout=GRPCURL_TIMEOUT,
        input=given[1] if given else None,
        stdin=None if given else subprocess.DEVNULL,
    )


def ok(server: ServerProcess, description: str) -> str:
    result = grpcurl(server, description)
    assert result.returncode == 0, f"{description}: exit {result.returncode}\n{result.stderr}"
    assert result.stderr == "", result.stderr
    return result.stdout


def messages(text: str) -> list[Any]:
    """The JSON objects grpcurl prints one after another (a stream is not one JSON document)."""
    decoder = json.JSONDecoder()
    out: list[Any] = []
    pos = 0
    for _ in range(len(text) + 1):  # each object takes at least one character
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return out
        value, pos = decoder.raw_decode(text, pos)
        out.append(value)
    raise AssertionError("unreachable: the loop consumes one object per step")


def one(server: ServerProcess, description: str) -> Any:
    found = messages(ok(server, description))
    assert len(found) == 1, found
    return found[0]


def f32(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# grpcurl prints proto3 JSON: zero values are left out, int64 are strings, names as in the .proto.
def movie_id(message: dict[str, Any]) -> int:
    return int(message.get("movie_id", 0))


def assert_model_info(got: dict[str, Any], info: me.ModelInfo) -> None:
    created = datetime.fromisoformat(got["create_time"].replace("Z", "+00:00"))
    assert_model_info_json(got, info, created)


def test_list_shows_the_services(server: ServerProcess) -> None:
    services = ok(server, "list services").split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services


def test_describe_the_service_lists_every_rpc(server: ServerProcess) -> None:
    text = ok(server, "describe the service")
    assert f"{SERVICE} is a service" in text
    rpcs = [line.split()[1] for line in text.splitlines() if line.strip().startswith("rpc ")]
    assert sorted(rpcs) == sorted(RPCS)
    assert "returns ( stream .movie_embeddings.v1.TrainResponse )" in text


def test_describe_a_request_message_shows_its_fields(server: ServerProcess) -> None:
    text = ok(server, "describe a request message")
    assert "movie_embeddings.v1.NearestMoviesRequest is a message" in text
    for field in [
        ".movie_embeddings.v1.ModelRef model = 1;",
        "oneof query {",
        "int32 movie_id = 2;",
        ".movie_embeddings.v1.Vector vector = 3;",
        "int32 k = 4;",
        ".movie_embeddings.v1.Metric metric = 5;",
        "repeated int32 exclude_movie_ids = 6;",
    ]:
        assert field in text, field


def test_get_movie_vector(server: ServerProcess, client: me.Client) -> None:
    got = one(server, "get a movie vector")
    assert movie_id(got) == 3
    np.testing.assert_array_equal(f32(got["vector"]), client.movie_vector(3))
    assert got["model"] == {"name": "default", "version": str(client.get_model().version)}


def test_batch_get_movie_vectors(server: ServerProcess, client: me.Client) -> None:
    got = one(server, "get several movie vectors")
    ids, matrix = client.movie_vectors([3, 0, 3, 79])
    assert [movie_id(v) for v in got["vectors"]] == ids.tolist() == [3, 0, 3, 79]
    np.testing.assert_array_equal(f32([v["vector"] for v in got["vectors"]]), matrix)


def test_stream_movie_vectors(server: ServerProcess, client: me.Client) -> None:
    pages = messages(ok(server, "stream every movie vector, in pages (a catalogue of any size)"))
    ids, matrix = client.movie_vectors()
    assert [len(page["vectors"]) for page in pages] == [50, 30]
    assert {page["total_movies"] for page in pages} == {80}
    got = [v for page in pages for v in page["vectors"]]
    assert [movie_id(v) for v in got] == ids.tolist()
    np.testing.assert_array_equal(np.stack([f32(v["vector"]) for v in got]), matrix)


def test_nearest_movies_to_a_movie(server: ServerProcess, client: me.Client) -> None:
    got = one(server, "nearest movies to a movie")["neighbors"]
    expected = client.nearest_movies(3, k=5)
    assert len(got) == 5
    assert [movie_id(n) for n in got] == [n.movie_id for n in expected]
    assert 3 not in [movie_id(n) for n in got]
    np.testing.assert_array_equal(f32([n["score"] for n in got]), [n.score for n in expected])


def test_nearest_movies_to_a_vector(server: ServerProcess, client: me.Client) -> None:
    assert client.get_model().embedding_dim == 5  # the command's vector has 5 values
    got = one(server, "nearest movies to a vector")["neighbors"]
    expected = client.nearest_movies(vector=[0.1, 0.2, -0.3, 0.4, 0.5], k=5, metric="euclidean")
    assert len(got) == 5
    assert [movie_id(n) for n in got] == [n.movie_id for n in expected]
    scores = f32([n["score"] for n in got])
    np.testing.assert_array_equal(scores, [n.score for n in expected])
    assert (scores < 0).all() and (np.diff(scores) <= 0).all()


def test_reconstruct(server: ServerProcess, client: me.Client) -> None:
    (got,) = one(server, "reconstruct a watcher")["reconstructions"]
    expected = client.reconstruct([0, 1, 2], age_years=30, education=1, top_k=3)
    probabilities = f32(got["probabilities"])
    assert probabilities.shape == (80,)
    np.testing.assert_array_equal(probabilities, expected.probabilities)
    recommended = [movie_id(r) for r in got["recommendations"]]
    assert recommended == [r.movie_id for r in expected.recommendations]
    assert len(recommended) == 3 and not {0, 1, 2} & set(recommended)
    np.testing.assert_array_equal(
        f32([r["probability"] for r in got["recommendations"]]), probabilities[recommended]
    )


def test_list_models(server: ServerProcess, client: me.Client) -> None:
    got = one(server, "list models")["models"]
    expected = client.list_models()
    assert len(got) == len(expected)
    assert any(m["ref"] == {"name": "default", "version": "1"} for m in got)
    for message, info in zip(got, expected, strict=True):
        assert_model_info(message, info)


def test_get_model(server: ServerProcess, client: me.Client) -> None:
    got = one(server, "get a model version")["model"]
    assert_model_info(got, client.get_model(me.ModelRef("default", 1)))
    assert got["synthetic"]["seed"] == "42"


def test_train_streams_progress_then_the_model(server: ServerProcess, client: me.Client) -> None:
    # The README's command names its model: on the shared server it adds the next version.
    version = 1 + max((m.version for m in client.list_models("grpcurlmodel")), default=0)
    stream = messages(ok(server, "train a model (server stream)"))
    assert len(stream) == 4, stream
    assert [list(m) for m in stream] == [["progress"]] * 3 + [["model"]]
    progress = [m["progress"] for m in stream[:3]]
    assert [p["epoch"] for p in progress] == [1, 2, 3]
    assert {p["epochs"] for p in progress} == {3}
    assert all(p["loss"] > 0 for p in progress)
    assert {p["val_loss"] for p in progress} == {"NaN"}  # no validation split asked for
    elapsed = [p["elapsed_seconds"] for p in progress]
    assert elapsed == sorted(elapsed)

    model = stream[3]["model"]
    assert model["ref"] == {"name": "grpcurlmodel", "version": str(version)}
    assert model["synthetic"]["num_watchers"] == 200
    assert model["synthetic"]["seed"] == "5"
    assert model["training"]["epochs"] == 3
    assert model["metrics"]["loss"] == progress[-1]["loss"]
    assert_model_info(model, client.get_model(me.ModelRef("grpcurlmodel", version)))


def test_label_query_by_label_and_delete_versions(server: ServerProcess, client: me.Client) -> None:
    for seed in (1, 2):  # the commands' model, versions 1 and 2
        list(client.train("scratch", num_watchers=100, epochs=1, seed=seed))
    assert one(server, "label a model version") == {"labels": {"stable": "2"}}
    got = one(server, "query the version a label names")
    assert got["model"] == {"name": "scratch", "version": "2"}
    np.testing.assert_array_equal(f32(got["vector"]), client.movie_vector(3, model="scratch"))
    assert client.get_model("scratch").labels == ("stable",)

    (deleted,) = one(server, "delete a model version")["models"]
    assert deleted["ref"] == {"name": "scratch", "version": "1"}
    assert [m.version for m in client.list_models("scratch")] == [2]
    refused = grpcurl(server, "delete every version of a model")  # v2 is labelled
    assert refused.returncode == 64 + 9, refused.stderr
    assert "Code: FailedPrecondition" in refused.stderr
    assert "version 2 is labelled stable" in refused.stderr

    assert one(server, "remove a label") == {}
    (deleted,) = one(server, "delete every version of a model")["models"]
    assert deleted["ref"] == {"name": "scratch", "version": "2"}
    assert client.list_models("scratch") == []


def test_a_dataset_imported_trained_and_queried_by_its_own_ids(
    server: ServerProcess, client: me.Client
) -> None:
    version = 1 + max((m.version for m in client.list_models("tinymodel")), default=0)
    imported = one(server, "import a dataset (client stream, from a file)")["dataset"]
    assert imported["ref"]["name"] == "tiny"
    assert (imported["num_ratings"], imported["num_watchers"], imported["num_movies"]) == (
        "48",
        12,
        4,
    )
    assert imported["num_titled_movies"] == 4 and imported["description"] == "typed by hand"
    (listed,) = one(server, "list datasets")["datasets"]
    assert listed == imported

    stream = messages(ok(server, "train on a dataset"))
    assert [list(m) for m in stream][-1] == ["model"] and len(stream) >= 3
    model = stream[-1]["model"]
    assert model["ref"] == {"name": "tinymodel", "version": str(version)}
    assert model["dataset"]["dataset"]["name"] == "tiny"
    assert model["dataset_info"] == imported
    assert "synthetic" not in model

    (found,) = one(server, "search movies by title")["movies"]
    assert (movie_id(found), found["title"]) == (40, "Misérables, Les (1995)")
    assert found["genres"] == ["Drama", "War"]

    got = one(server, "nearest movies by a dataset's own id")["neighbors"]
    expected = client.nearest_movies(40, k=2, model="tinymodel")
    assert [(movie_id(n), n["title"]) for n in got] == [(n.movie_id, n.title) for n in expected]
    assert {movie_id(n) for n in got} <= {10, 20, 30} and all(n["title"] for n in got)

    (recon,) = one(server, "recommendations for liked movies")["reconstructions"]
    # The model had no ages or educations: they are absent, whatever a request says.
    expected_r = client.reconstruct([10], age_years=0, education=0, top_k=2, model="tinymodel")
    assert [(movie_id(r), r["title"]) for r in recon["recommendations"]] == [
        (r.movie_id, r.title) for r in expected_r.recommendations
    ]
    assert 10 not in [movie_id(r) for r in recon["recommendations"]]
    assert "probabilities" not in recon  # the top 2 alone

    # Watcher 2 liked 10 and 20 (5 stars): the other two are all there is to recommend.
    (by_id,) = one(server, "recommendations for a watcher of the dataset, by its id")[
        "reconstructions"
    ]
    expected_w = client.recommend(2, top_k=2, model="tinymodel")
    got_w = [(movie_id(r), r["title"], r["probability"]) for r in by_id["recommendations"]]
    assert got_w == [(r.movie_id, r.title, pytest.approx(r.probability)) for r in expected_w]
    assert {movie_id(r) for r in by_id["recommendations"]} == {30, 40}

    # 10 and 20 are children's films: only 30 is left, though k is 2.
    (kept,) = one(server, "nearest movies, leaving a genre out")["neighbors"]
    assert (movie_id(kept), kept["title"]) == (30, "Heat (1995)")
    # Of the two not liked, only 40 is a drama; watcher 2 liked 10 and 20.
    (why,) = one(server, "recommendations of a genre, with the liked movies that led to them")[
        "reconstructions"
    ]
    (only,) = why["recommendations"]
    (expected_g,) = client.recommend(2, top_k=2, genres=["Drama"], because=True, model="tinymodel")
    assert movie_id(only) == expected_g.movie_id == 40
    assert only["because_movie_ids"] == list(expected_g.because_movie_ids)
    assert sorted(only["because_movie_ids"]) == [10, 20]
    assert only["because_titles"] == list(expected_g.because_titles)

    (deleted,) = one(server, "delete a dataset")["datasets"]
    assert deleted["ref"] == imported["ref"]
    assert client.list_datasets("tiny") == []
    assert len(client.nearest_movies(40, k=2, model="tinymodel")) == 2  # the model still answers


@pytest.mark.parametrize(
    ("description", "exit_code", "code", "words"),
    [
        ("error: unknown movie", 64 + 5, "NotFound", "movie 999 is not in model default"),
        ("error: negative movie id", 64 + 3, "InvalidArgument", "movie ids must be >= 0, got -1"),
    ],
)
def test_errors(
    server: ServerProcess, description: str, exit_code: int, code: str, words: str
) -> None:
    result = grpcurl(server, description)
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    output = result.stdout + result.stderr
    assert f"Code: {code}" in output
    assert f"Message: movie_id: {words}" in output
    assert "Traceback" not in output
    if code == "InvalidArgument":
        assert "google.rpc.BadRequest" in output and '"field":"movie_id"' in output
    # The server shrugs it off.
    with me.Client(server.target) as client:
        assert client.movie_vector(0).shape == (5,)


@pytest.mark.parametrize("description", ["health check", "health check of the service"])
def test_health_check_is_serving(server: ServerProcess, description: str) -> None:
    assert one(server, description) == {"status": "SERVING"}


def test_the_readme_shows_exactly_these_commands() -> None:
    readme = (Path(__file__).resolve().parents[2] / "docs" / "grpcurl.md").read_text()
    shown = [line for line in readme.splitlines() if line.startswith("grpcurl ")]
    assert shown == [
        "grpcurl " + shlex.join(args) + (f" < {STDIN[d][0]}" if d in STDIN else "")
        for d, args in GRPCURL_COMMANDS
    ]
    # The file the import reads, as the README writes it.
    assert f"cat > import.json <<'EOF'\n{IMPORT_JSON}\nEOF\n" in readme
