"""The process helpers benchmarks use, on real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from movie_embeddings_server.serving.process import child_pids, cpu_seconds, wait_quiet


def test_cpu_seconds_counts_a_busy_process_and_not_an_idle_one() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(1.0)
        assert cpu_seconds(busy.pid) > 0.3
        assert cpu_seconds(idle.pid) < 0.3
    finally:
        busy.kill()
        idle.kill()
        busy.wait(timeout=30)
        idle.wait(timeout=30)


def test_wait_quiet_returns_once_a_process_idles_and_gives_up_on_a_busy_child() -> None:
    # A parent that sleeps with a child that spins: the child's CPU counts.
    spinning = "import subprocess, sys, time; " + (
        "subprocess.Popen([sys.executable, '-c', 'while True: pass']); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", spinning])
    quiet = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)  # the child started
        started = time.monotonic()
        wait_quiet(quiet.pid, timeout=10)
        assert time.monotonic() - started < 5
        with pytest.raises(TimeoutError, match="still busy"):
            wait_quiet(parent.pid, timeout=2)
    finally:
        for child in child_pids(parent.pid):
            os.kill(child, signal.SIGKILL)
        parent.kill()
        quiet.kill()
        parent.wait(timeout=30)
        quiet.wait(timeout=30)
