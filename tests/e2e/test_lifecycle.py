"""A server killed or stopped in the middle of a Train keeps a store that loads whole."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import child_pids, start_server, wait_until

import movie_embeddings as me


def _first_epoch_then(client: me.Client, name: str) -> Iterator[me.TrainProgress | me.ModelInfo]:
    """Start a long Train and return its stream once the first epoch has come. The caller
    holds the stream: dropping it would cancel the Train."""
    stream = client.train(name, num_watchers=20_000, epochs=200, seed=1)
    assert isinstance(next(stream), me.TrainProgress)
    return stream


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
            running = _first_epoch_then(client, "doomed")
            (trainer,) = child_pids(first.process.pid)
            first.process.send_signal(signal.SIGKILL)
            assert first.process.wait(timeout=30) == -signal.SIGKILL
            with pytest.raises(me.Unavailable):  # the stream was live until the kill
                for _ in running:
                    pass
    finally:
        first.stop()
    # The trainer process sees its input end and stops too, staging nothing.
    wait_until(lambda: _gone(trainer), 30, "the trainer process gone after its server")
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


def test_sigterm_mid_train_ends_it_cancelled_exits_0_and_stores_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    grace = 10.0
    server = start_server(data, tmp_path / "server.log", "--grace-seconds", str(grace))
    try:
        with me.Client(server.target) as client:
            running = _first_epoch_then(client, "interrupted")  # still read: never cancelled
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # CANCELLED from the server, or UNAVAILABLE if it has gone before the status came.
            with pytest.raises((me.Cancelled, me.Unavailable)):
                for _ in running:
                    pass
            ended = time.monotonic() - signalled
            assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()  # only if a check above failed: it has exited otherwise
    # No "interrupted" version, committed or staged (its lock file may stay).
    assert [p.name for p in data.glob("interrupted/*") if p.name != ".lock"] == []
    log = server.log_text()
    assert "shutting down" in log
    assert re.search(r"Train CANCELLED \d+\.\d+ ms", log), log
    assert ended < grace / 2, ended  # cancelled at once, not when the grace period ran out
