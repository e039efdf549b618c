"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader on protos/) against a real server.

tests/interop/client.js calls every RPC once and prints one JSON object; these tests check
it against the Python SDK on the same server. Its JSON is proto-loader's object form:
lowerCamelCase field names (map keys as sent), int64/uint64 as strings, enums by name,
defaults filled in, `event` naming TrainResponse's set member, and NaN printed as null.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ServerProcess, assert_model_info_json, snake_keys

import movie_embeddings as me

INTEROP = Path(__file__).resolve().parents[1] / "interop"
CLIENT_JS = INTEROP / "client.js"
NPM_CI_TIMEOUT = 300.0  # seconds: downloads the pinned packages when npm's cache lacks them
NODE_TIMEOUT = 120.0  # seconds: the script's calls, a small training included
TRAIN_MODEL = "nodemodel"  # what client.js trains: 200 watchers, seed 7, 3 epochs
TOLERANCE = 1e-6
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def run(command: list[str], timeout: float, cwd: Path | None = None) -> str:
    """Run a command to completion; its stdout, or a failure showing everything it printed."""
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)}: exit {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result.stdout


@pytest.fixture(scope="module")
def trained_ref(server: ServerProcess) -> dict[str, str]:
    """The version client.js's Train will add: the next one of TRAIN_MODEL on this server."""
    with me.Client(server.target) as sdk:
        newest = max((m.version for m in sdk.list_models(TRAIN_MODEL)), default=0)
    return {"name": TRAIN_MODEL, "version": str(newest + 1), "label": ""}


@pytest.fixture(scope="module")
def node(server: ServerProcess, trained_ref: dict[str, str]) -> dict[str, Any]:
    """Install the pinned packages with `npm ci`, then run client.js once on the server."""
    node_path, npm_path = shutil.which("node"), shutil.which("npm")
    if node_path is None or npm_path is None:
        missing = [name for name, found in [("node", node_path), ("npm", npm_path)] if not found]
        message = f"{', '.join(missing)} not found on PATH: install Node.js and npm"
        message += " (Debian: apt-get install -y nodejs npm)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI never skips silently
        pytest.skip(message)
    # Exactly package-lock.json's versions (and it must agree with package.json). Install
    # scripts are not needed: grpc-js and proto-loader are plain JavaScript.
    run(
        [npm_path, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        NPM_CI_TIMEOUT,
        cwd=INTEROP,
    )
    output = run([node_path, str(CLIENT_JS), server.target], NODE_TIMEOUT)
    results: dict[str, Any] = json.loads(output)
    return results


def f32(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def ref(info: me.ModelInfo) -> dict[str, str]:
    """A ModelRef as proto-loader gives it: the int64 version as a string."""
    return {"name": info.name, "version": str(info.version), "label": ""}


def assert_model_info(got: dict[str, Any], info: me.ModelInfo) -> None:
    """A proto-loader ModelInfo against the SDK's description of the same version."""
    stamp = got["createTime"]
    created = EPOCH + timedelta(seconds=int(stamp["seconds"]), microseconds=stamp["nanos"] // 1000)
    assert_model_info_json(snake_keys(got), info, created)


def test_get_movie_vector(node: dict[str, Any], client: me.Client) -> None:
    got = node["getMovieVector"]
    assert got["movieId"] == 3
    vector = f32(got["vector"])
    assert vector.shape == (5,)
    np.testing.assert_allclose(vector, client.movie_vector(3), rtol=0, atol=TOLERANCE)
    assert got["model"] == ref(client.get_model())


def test_batch_get_movie_vectors(node: dict[str, Any], client: me.Client) -> None:
    got = node["batchGetMovieVectors"]["vectors"]
    ids, matrix = client.movie_vectors([3, 0, 79])
    assert [v["movieId"] for v in got] == ids.tolist() == [3, 0, 79]
    vectors = f32([v["vector"] for v in got])
    assert vectors.shape == (3, 5)
    np.testing.assert_allclose(vectors, matrix, rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(vectors[0], f32(node["getMovieVector"]["vector"]))


def test_nearest_movies(node: dict[str, Any], client: me.Client) -> None:
    got = node["nearestMovies"]["neighbors"]
    expected = client.nearest_movies(3, k=5)
    ids = [n["movieId"] for n in got]
    assert len(ids) == 5 and 3 not in ids
    assert ids == [n.movie_id for n in expected]
    np.testing.assert_allclose(
        [n["score"] for n in got], [n.score for n in expected], rtol=0, atol=TOLERANCE
    )


def test_reconstruct(node: dict[str, Any], client: me.Client) -> None:
    (got,) = node["reconstruct"]["reconstructions"]
    expected = client.reconstruct([0, 1, 2], age_years=30, education=1, top_k=3)
    probabilities = f32(got["probabilities"])
    assert probabilities.shape == (80,)
    np.testing.assert_allclose(probabilities, expected.probabilities, rtol=0, atol=TOLERANCE)
    recommended = [r["movieId"] for r in got["recommendations"]]
    assert recommended == [r.movie_id for r in expected.recommendations]
    assert len(recommended) == 3 and not {0, 1, 2} & set(recommended)
    np.testing.assert_allclose(
        [r["probability"] for r in got["recommendations"]],
        probabilities[recommended],
        rtol=0,
        atol=TOLERANCE,
    )


def test_reconstruct_top_k_only(node: dict[str, Any], client: me.Client) -> None:
    (got,) = node["reconstructTopK"]["reconstructions"]
    expected = client.reconstruct([0, 1, 2], age_years=30, education=1, top_k=3)
    assert got["probabilities"] == []
    assert [r["movieId"] for r in got["recommendations"]] == [
        r.movie_id for r in expected.recommendations
    ]


def test_stream_movie_vectors(node: dict[str, Any], client: me.Client) -> None:
    pages = node["streamMovieVectors"]
    ids, matrix = client.movie_vectors()
    assert [len(page["vectors"]) for page in pages] == [30, 30, 20]
    got = [v for page in pages for v in page["vectors"]]
    assert [v["movieId"] for v in got] == ids.tolist()
    np.testing.assert_allclose(
        np.array([v["vector"] for v in got], np.float32), matrix, rtol=0, atol=TOLERANCE
    )


def test_list_models(node: dict[str, Any], client: me.Client, trained_ref: dict[str, str]) -> None:
    got = node["listModels"]["models"]  # listed after the training
    refs = [m["ref"] for m in got]
    assert ref(client.get_model()) in refs
    assert trained_ref in refs
    # In the server's order, each as the SDK describes it; versions trained since (by
    # client.js or by other tests on the shared server) are not in its list.
    keys = [(r["name"], int(r["version"])) for r in refs]
    assert keys == sorted(keys)
    sdk = {(info.name, info.version): info for info in client.list_models()}
    for message, key in zip(got, keys, strict=True):
        assert_model_info(message, sdk[key])


def test_get_model(node: dict[str, Any], client: me.Client) -> None:
    got = node["getModel"]["model"]
    assert got["ref"]["name"] == "default"
    assert got["numMovies"] == 80
    assert got["embeddingDim"] == 5
    assert_model_info(got, client.get_model())


def test_train_streams_progress_then_the_model(
    node: dict[str, Any], client: me.Client, trained_ref: dict[str, str]
) -> None:
    stream = node["train"]
    assert [m["event"] for m in stream] == ["progress"] * 3 + ["model"], stream
    progress = [m["progress"] for m in stream[:3]]
    assert [p["epoch"] for p in progress] == [1, 2, 3]
    assert {p["epochs"] for p in progress} == {3}
    assert all(math.isfinite(p["loss"]) and p["loss"] > 0 for p in progress)
    assert {p["valLoss"] for p in progress} == {None}  # NaN (no validation split) as JSON null
    elapsed = [p["elapsedSeconds"] for p in progress]
    assert elapsed == sorted(elapsed)

    model = stream[3]["model"]
    assert model["ref"] == trained_ref
    assert model["synthetic"]["numWatchers"] == 200
    assert model["synthetic"]["seed"] == "7"
    assert model["training"]["epochs"] == 3
    assert model["history"] == progress
    assert model["metrics"]["loss"] == progress[-1]["loss"]
    assert_model_info(
        model, client.get_model(me.ModelRef(TRAIN_MODEL, int(trained_ref["version"])))
    )


def test_unknown_movie_is_not_found(node: dict[str, Any], client: me.Client) -> None:
    got = node["notFound"]
    assert got["code"] == 5 and got["codeName"] == "NOT_FOUND", got
    assert "movie 999 is not in model default" in got["details"]
    assert got["details"].startswith("movie_id: ")
    assert client.movie_vector(0).shape == (5,)  # the server shrugs it off


DATASET, DATASET_MODEL = "nodedata", "nodedatamodel"  # what client.js imports and trains


def test_import_dataset_by_client_streaming(node: dict[str, Any]) -> None:
    info = node["importDataset"]["dataset"]
    assert info["ref"]["name"] == DATASET
    assert (info["numRatings"], info["numWatchers"], info["numMovies"]) == ("480", 40, 12)
    assert info["numTitledMovies"] == 12 and info["description"] == "made by client.js"
    assert (info["minRating"], info["maxRating"]) == (1, 5)
    (listed,) = node["listDatasets"]["datasets"]
    assert listed == info == node["getDataset"]["dataset"]


def test_train_on_a_dataset_then_query_by_its_own_ids(
    node: dict[str, Any], client: me.Client
) -> None:
    stream = node["trainDataset"]
    assert [m["event"] for m in stream][-1] == "model"
    assert {m["event"] for m in stream[:-1]} == {"progress"}
    model = stream[-1]["model"]
    assert model["ref"]["name"] == DATASET_MODEL
    assert model["dataset"]["dataset"]["name"] == DATASET
    assert model["datasetInfo"] == node["importDataset"]["dataset"]
    assert model["synthetic"] is None  # unset for a model of a dataset
    info = client.get_model(me.ModelRef(DATASET_MODEL, int(model["ref"]["version"])))
    assert model["numMovies"] == info.num_movies == 12

    (found,) = node["searchMovies"]["movies"]
    assert (found["movieId"], found["title"]) == (10, "Misérables, Les (1995)")
    assert found["genres"] == ["Drama", "War"]

    got = node["datasetNearest"]["neighbors"]
    expected = client.nearest_movies(10, k=3, model=info.ref)
    assert [(n["movieId"], n["title"]) for n in got] == [(n.movie_id, n.title) for n in expected]
    assert {n["movieId"] for n in got} <= {20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120}


def test_a_bad_import_row_is_refused_by_field_and_the_dataset_deleted(
    node: dict[str, Any], client: me.Client
) -> None:
    bad = node["badImport"]
    assert bad["codeName"] == "INVALID_ARGUMENT", bad
    assert bad["details"].startswith("chunks[1].ratings.movie_ids[1]: "), bad
    assert client.list_datasets("nodebad") == []
    (deleted,) = node["deleteDataset"]["datasets"]
    assert deleted["ref"] == node["importDataset"]["dataset"]["ref"]
    assert client.list_datasets(DATASET) == []
