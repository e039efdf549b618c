"""Operating the server: the wait for its first model, and training into a store from outside."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from conftest import CLI, ServerProcess, copy_store, start_server, wait_until

import movie_embeddings as me

CLI_TIMEOUT = 180.0  # seconds: TensorFlow's import and a small training
POLL_SECONDS = 1.0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL
    )


def test_queries_during_the_first_training_say_when_it_will_be_ready(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [*CLI, "serve", "--port", "0", "--data-dir", str(tmp_path / "data")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    waiter = None
    try:
        found = wait_until(
            lambda: re.search(r"listening on (127\.0\.0\.1:\d+)", log.read_text()), 60, "listening"
        )
        target = found.group(1)
        waiter = subprocess.Popen(
            [*CLI, "health", "--wait", "120", "--target", target],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        refusals = []
        with me.Client(target, timeout=5) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    client.movie_vector(0)
                    break
                except me.FailedPrecondition as exc:
                    refusals.append(str(exc))
                    time.sleep(0.02)
        out, err = waiter.communicate(timeout=CLI_TIMEOUT)
    finally:
        if waiter:
            waiter.kill()
        server.terminate()
        assert server.wait(timeout=30) == 0
    assert refusals, "no query came before the first model was ready"
    assert not [r for r in refusals if not r.startswith("the default model is being trained; ")]
    estimates = [re.search(r"ready in about (\d+) s \(epoch (\d+)/24\)", r) for r in refusals]
    assert any(estimates), refusals[-5:]  # estimated once epochs had run
    assert all(int(m.group(1)) >= 1 for m in estimates if m)
    assert "train one first" not in " ".join(refusals)
    assert (waiter.returncode, out, err) == (0, "SERVING\n", "")
    print(f"\n{len(refusals)} queries refused while training; last: {refusals[-1]}")


def test_train_into_the_store_is_served_by_the_replicas_which_keep_the_newest(
    server: ServerProcess, tmp_path: Path
) -> None:
    data = copy_store(server, tmp_path / "data")
    replica = start_server(
        data, tmp_path / "replica.log", "--poll-seconds", str(POLL_SECONDS), "--keep-versions", "1"
    )
    try:
        with me.Client(replica.target) as client:
            for version in (1, 2):
                trained = _cli(
                    "train", "--store", str(data), "--model", "job",
                    "--num-watchers", "100", "--epochs", "1", "--seed", str(version),
                )  # fmt: skip
                assert trained.returncode == 0, trained.stderr
                assert trained.stdout.startswith(f"trained job v{version} "), trained.stdout
                assert "  given: epochs 1, num_watchers 100, seed " in trained.stdout
                assert re.search(r"^epoch 1/1 loss \d", trained.stderr, re.MULTILINE)
                wait_until(
                    lambda v=version: [m.version for m in client.list_models("job")] == [v],
                    POLL_SECONDS * 2 + 10,
                    f"the replica serves job v{version} alone",
                )
            assert client.movie_vector(3, model="job").shape == (5,)
        assert sorted(p.name for p in (data / "job").iterdir() if p.name.isdigit()) == ["2"]
        assert "removed job v1: older than the newest 1" in replica.log_text()
    finally:
        assert replica.stop() == 0


def test_ctrl_c_on_train_into_the_store_stores_nothing(tmp_path: Path) -> None:
    train = subprocess.Popen(
        [*CLI, "train", "--store", str(tmp_path), "--model", "cut", "--epochs", "300"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert train.stderr is not None
        for line in train.stderr:  # TensorFlow's own lines come first
            if line.startswith("epoch 1/300 "):
                break
        train.send_signal(signal.SIGINT)
        out, err = train.communicate(timeout=CLI_TIMEOUT)
    finally:
        train.kill()
    assert train.returncode == 130, err
    assert (out, err) == ("", "cancelled; no version stored\n")
    assert not (tmp_path / "cut").exists() or not any(
        p.name.isdigit() for p in (tmp_path / "cut").iterdir()
    )
