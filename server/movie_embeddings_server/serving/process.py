"""Run `movie-embeddings serve` as a child process and wait until it serves (tests, benchmarks)."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The console script installed beside this interpreter: what a user runs.
CLI = [shutil.which("movie-embeddings", path=os.path.dirname(sys.executable)) or "movie-embeddings"]
START_TIMEOUT = 120.0  # seconds: TensorFlow's import plus the default model's training


@dataclass
class ServerProcess:
    """A `movie-embeddings serve` subprocess, its address, data dir and log file."""

    process: subprocess.Popen
    target: str
    data_dir: Path
    log: Path
    start_seconds: float

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM and the exit code; a process that will not stop is killed, and that raises."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            raise


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process, from /proc (MiB); `field` VmHWM: its peak so far."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def reset_peak_rss(pid: int) -> float:
    """Start a process's peak (VmHWM) again from its resident memory now, and return that
    (MiB); a peak read later is then the peak since this call (Linux 4.0 and later)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss_mb(pid)


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started (its trainer process, for a server)."""
    # Each thread lists the children it forked, and any thread may start a trainer process.
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return sorted(int(c) for task in tasks for c in (task / "children").read_text().split())


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (user + system, its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, timeout: float = 60.0, busy: float = 0.05) -> None:
    """Block until a process and its children use under `busy` of a core over half a second
    (bounded): a server that is SERVING still imports TensorFlow in the trainer process it
    keeps warm (3-4 s of a core), which a measure taken meanwhile would count."""
    deadline = time.monotonic() + timeout
    used = None
    while time.monotonic() < deadline:
        now = sum(cpu_seconds(p) for p in [pid, *child_pids(pid)])
        if used is not None and now - used < busy * 0.5:
            return
        used = now
        time.sleep(0.5)
    raise TimeoutError(f"process {pid} still busy after {timeout} s")


def wait_serving(
    target: str, timeout: float, credentials: grpc.ChannelCredentials | None = None
) -> None:
    """Block until the health service reports SERVING (bounded)."""
    deadline = time.monotonic() + timeout
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{target} not SERVING after {timeout} s")


def _limit_files(size: int) -> Callable[[], None]:
    def limit() -> None:  # in the child, before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails, not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def start_server(
    data_dir: Path,
    log: Path,
    *extra: str,
    channel_credentials: grpc.ChannelCredentials | None = None,
    file_size_limit: int | None = None,
) -> ServerProcess:
    """Start `serve --port 0` and wait until it is SERVING; the port is read from its log.
    A server started with TLS flags is checked over `channel_credentials`. With
    `file_size_limit`, it and its trainer processes write no file past that many bytes (the
    write fails EFBIG, as on a full disk; the log file counts too)."""
    started = time.monotonic()
    offset = log.stat().st_size if log.exists() else 0  # only this process's lines count
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*CLI, "serve", "--port", "0", "--data-dir", str(data_dir), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=None if file_size_limit is None else _limit_files(file_size_limit),
        )
    deadline = started + START_TIMEOUT
    try:
        port = None
        while port is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')}")
            text = log.read_bytes()[offset:].decode(errors="replace")
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
            port = int(found.group(1)) if found else None
            time.sleep(0.05)
        target = f"127.0.0.1:{port}"
        wait_serving(target, deadline - time.monotonic(), channel_credentials)
    except BaseException:
        process.kill()
        process.wait(timeout=30)
        raise
    return ServerProcess(process, target, data_dir, log, time.monotonic() - started)
