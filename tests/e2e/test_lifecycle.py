"""A server killed or stopped in the middle of a Train keeps a store that loads whole."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from conftest import child_pids, start_server

import movie_embeddings as me


def _first_epoch_then(client: me.Client, name: str) -> None:
    """Start a long Train and return once its first epoch has been streamed."""
    stream = client.train(name, num_watchers=20_000, epochs=200, seed=1)
    assert isinstance(next(stream), me.TrainProgress)


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped counts: it runs no more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_kill_9_mid_train_leaves_every_listed_version_loadable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data, tmp_path / "first.log")
    try:
        with me.Client(first.target) as client:
            _first_epoch_then(client, "doomed")
            (trainer,) = child_pids(first.process.pid)
            first.process.send_signal(signal.SIGKILL)
            assert first.process.wait(timeout=30) == -signal.SIGKILL
    finally:
        first.stop()
    # The trainer process sees its input end and stops too, staging nothing.
    deadline = time.monotonic() + 30
    while not _gone(trainer) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(trainer)
    second = start_server(data, tmp_path / "second.log")
    try:
        with me.Client(second.target) as client:
            models = client.list_models()
            assert [(m.name, m.version) for m in models] == [("default", 1)]
            for info in models:
                assert client.movie_vectors(model=info.ref)[1].shape == (80, 5)
        assert "skipping damaged" not in second.log_text()
    finally:
        assert second.stop() == 0


def test_sigterm_mid_train_exits_0_and_stores_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, tmp_path / "server.log", "--grace-seconds", "2")
    with me.Client(server.target) as client:
        _first_epoch_then(client, "interrupted")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    models = sorted(p.name for p in data.iterdir() if not p.name.startswith("."))  # not locks
    assert models == ["default"]  # no "interrupted" version
    assert "shutting down" in server.log_text()
