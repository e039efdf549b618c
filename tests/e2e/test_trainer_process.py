"""TensorFlow lives in the trainer process only: the serving process never loads it."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from conftest import (
    TENSORFLOW_START,
    ServerProcess,
    child_pids,
    copy_store,
    start_server,
    wait_until,
)

import movie_embeddings as me
from movie_embeddings_server.serving.process import START_TIMEOUT


def _tensorflow_objects(pid: int) -> set[str]:
    """The TensorFlow shared objects mapped into process `pid` (any `import tensorflow`,
    Keras's included, maps _pywrap_tensorflow_internal.so and libtensorflow*.so)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    files = {line.split()[-1] for line in lines if len(line.split()) == 6}
    return {f for f in files if "tensorflow" in f.lower() and ".so" in Path(f).name}


def test_the_serving_process_never_maps_tensorflow(
    server: ServerProcess, client: me.Client
) -> None:
    name = f"notf-{uuid.uuid4().hex[:8]}"
    info = list(client.train(name, num_watchers=200, epochs=2, seed=1))[-1]
    assert isinstance(info, me.ModelInfo)
    client.movie_vectors(model=info.ref)
    client.nearest_movies(1, k=3, model=info.ref)
    client.reconstruct([1, 2], age_years=30, education=1, top_k=3, model=info.ref)
    # The check can see TensorFlow: the trainer process that ran the Train maps it.
    (trainer,) = child_pids(server.process.pid)
    wait_until(lambda: _tensorflow_objects(trainer), 120, "TensorFlow mapped by the trainer")
    assert _tensorflow_objects(server.process.pid) == set()


def test_the_trainer_starts_quietly_unless_the_log_level_is_debug(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A level set in the environment wins over --log-level; this process may have set one
    # (importing the Keras module does), and the servers started here inherit it.
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    # The session server (default level) trained `default` at its start, so TensorFlow has
    # loaded and looked for a GPU in its trainer process.
    assert not re.search(TENSORFLOW_START, server.log_text(), re.IGNORECASE)
    assert "default model v1 ready" in server.log_text()
    debug = start_server(
        copy_store(server, tmp_path / "data"), tmp_path / "debug.log", "--log-level", "DEBUG"
    )
    try:
        wait_until(  # its trainer process starts at once (trainer.warm)
            lambda: re.search(TENSORFLOW_START, debug.log_text(), re.IGNORECASE),
            START_TIMEOUT,  # TensorFlow's import: seconds, a minute or more on a busy machine
            "TensorFlow's start-up lines in the log at --log-level DEBUG",
        )
    finally:
        assert debug.stop() == 0
