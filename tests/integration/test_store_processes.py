"""Processes sharing one store: versions committed at the same instant get distinct numbers and
none is lost; a writer killed (-9) while staging or committing leaves no damaged version and
no lock held."""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import wait_until

from movie_embeddings_server.store import versions
from movie_embeddings_server.store.models import Store, new_metadata

# Children import only this module (no fork of a process that holds gRPC threads).
SPAWN = multiprocessing.get_context("spawn")
WRITERS = 4
HOLD_SECONDS = 0.2  # each commit holds its chosen number this long before the rename
MOVIES, DIM, HIDDEN = 20_000, 64, 256  # ~26 MB of weights: a version takes a while to write
COMMITTING = "committing"  # the file a writer makes once it holds the lock, number chosen


def _commit_at_once(parent: str, marker: str, barrier: Any, results: Any) -> None:
    """Stage a version holding `marker`, wait for every writer, then commit it; the number,
    or the error."""
    try:
        staged = versions.staging_dir(Path(parent))
        versions.write_file(staged / "marker", marker.encode())
        barrier.wait(timeout=60)
        version = versions.commit(Path(parent), staged, lambda _s, _v: time.sleep(HOLD_SECONDS))
        results.put((marker, version))
    except Exception as exc:
        results.put((marker, repr(exc)))


def test_writers_committing_at_the_same_instant_get_distinct_versions(tmp_path: Path) -> None:
    parent = tmp_path / "m"
    parent.mkdir()
    barrier, results = SPAWN.Barrier(WRITERS), SPAWN.Queue()
    writers = [
        SPAWN.Process(target=_commit_at_once, args=(str(parent), f"w{i}", barrier, results))
        for i in range(WRITERS)
    ]
    try:
        for writer in writers:
            writer.start()
        got = dict(results.get(timeout=120) for _ in writers)
    finally:
        for writer in writers:
            writer.join(30)
            writer.kill()  # only one that is stuck: the others have exited
    assert all(isinstance(version, int) for version in got.values()), got  # no error
    assert sorted(got.values()) == list(range(1, WRITERS + 1)), got
    for marker, version in got.items():  # each its own, none overwritten
        assert (parent / str(version) / "marker").read_text() == marker
    assert versions.version_numbers(parent) == list(range(1, WRITERS + 1))
    assert list(parent.glob(f"{versions.TMP_PREFIX}*")) == []


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "embedding": rng.normal(size=(MOVIES, DIM)).astype(np.float32),
        "hidden_kernel": rng.normal(size=(2 + DIM, HIDDEN)).astype(np.float32),
        "hidden_bias": np.zeros(HIDDEN, np.float32),
        "output_kernel": rng.normal(size=(HIDDEN, MOVIES)).astype(np.float32),
        "output_bias": np.zeros(MOVIES, np.float32),
    }


def _write_forever(root: str) -> None:
    """Stage and commit versions of model "m" one after another, until killed."""
    store, weights = Store(Path(root)), _weights()
    while True:
        meta = new_metadata(age_mean=40.0, age_std=10.0)
        store.commit("m", store.stage("m", None, weights, meta))


def _commit_slowly(root: str) -> None:
    """Stage one version, then stop for good inside the commit: lock held, number chosen."""
    store = Store(Path(root))
    staged = store.stage("m", None, _weights(), new_metadata(age_mean=40.0, age_std=10.0))

    def hold(staged: Path, version: int) -> None:
        (Path(root) / COMMITTING).write_text(str(version))
        time.sleep(600)

    versions.commit(Path(root) / "m", staged, hold)


def _kill(target: Callable[[str], None], root: Path, when: Callable[[], bool]) -> None:
    """Run `target` in a process of its own and SIGKILL it once `when()` holds."""
    writer = SPAWN.Process(target=target, args=(str(root),))
    writer.start()
    try:
        wait_until(lambda: when() or not writer.is_alive(), 120, "the moment to kill the writer")
        assert writer.is_alive(), f"the writer exited first ({writer.exitcode})"
        writer.kill()  # SIGKILL
        writer.join(30)
        assert writer.exitcode == -signal.SIGKILL
    finally:
        writer.kill()  # only if a check above failed: it is dead otherwise
        writer.join(30)


def _staging(root: Path) -> list[Path]:
    return list((root / "m").glob(f"{versions.TMP_PREFIX}*"))


def _assert_whole(root: Path, caplog: pytest.LogCaptureFixture) -> int:
    """Every version on disk loads, none is damaged, the lock is free, and the next commit
    takes the next number; how many versions there were."""
    numbers = versions.version_numbers(root / "m")
    assert numbers == list(range(1, len(numbers) + 1))
    store = Store(root)
    with caplog.at_level(logging.WARNING):
        assert store.load_new() == len(numbers)
    assert "skipping damaged" not in caplog.text
    with open(root / "m" / versions.LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the dead writer holds nothing
        fcntl.flock(lock, fcntl.LOCK_UN)
    staged = store.stage("m", None, _weights(), new_metadata(age_mean=40.0, age_std=10.0))
    assert store.commit("m", staged).version == len(numbers) + 1
    return len(numbers)


def test_a_writer_killed_while_staging_leaves_no_damaged_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _kill(_write_forever, tmp_path, lambda: bool(_staging(tmp_path)))  # its first version
    assert _assert_whole(tmp_path, caplog) <= 1  # there whole, or not at all


def test_a_writer_killed_while_committing_leaves_no_version_and_no_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _kill(_commit_slowly, tmp_path, (tmp_path / COMMITTING).exists)
    assert (tmp_path / COMMITTING).read_text() == "1"  # it had chosen number 1
    assert len(_staging(tmp_path)) == 1  # left for the stale-staging sweep, not a version
    assert _assert_whole(tmp_path, caplog) == 0


@pytest.mark.parametrize("run", range(3))
def test_a_writer_killed_at_any_moment_leaves_whole_versions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, run: int
) -> None:
    """After its first version, killed a random moment later: mid-stage, mid-commit or
    between the two."""
    wait = random.Random(run).uniform(0, 1.0)
    seen: list[float] = []  # when the first version was seen

    def a_while_after_the_first_version() -> bool:
        if not seen and versions.version_numbers(tmp_path / "m"):
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= wait

    _kill(_write_forever, tmp_path, a_while_after_the_first_version)
    assert _assert_whole(tmp_path, caplog) >= 1
