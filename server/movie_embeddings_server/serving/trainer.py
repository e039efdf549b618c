"""Train jobs, run in trainer processes (worker.py) so that TensorFlow never shares the GIL
with queries; each finished job is committed to the store here and served at once.

A trainer process is started with the server (TensorFlow's import is paid before the first
Train) and kept for the next job. One job runs per process, and there are at most
`max_concurrent` processes. A cancelled job is stopped within one TensorFlow call; a process
that does not answer a stop within KILL_AFTER seconds is killed and replaced, and so is one
that has run RECYCLE_AFTER jobs.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import DatasetTrainingSpec, SyntheticSpec, TrainSpec
from ..errors import Cancelled, ResourceExhausted
from ..jobs import Epoch, refused_error
from ..model.inference import ServedModel
from ..store.models import Store

log = logging.getLogger(__name__)

KILL_AFTER = 10.0  # seconds a trainer process has to stop a cancelled job
# A trainer process is replaced after this many jobs: a safety net against what a long-lived
# TensorFlow keeps. Keras fits used to keep ~5 MiB each (16 fits of the default model, 628 ->
# 712 MiB): TensorFlow's gradient registry, which the worker's end_job now frees.
RECYCLE_AFTER = 20


def _environment() -> dict[str, str]:
    """The trainer process's: TensorFlow's start-up lines only when this process logs at
    DEBUG (training/quiet_start.py); a TF_CPP_MIN_LOG_LEVEL set by the user is kept."""
    level = "0" if log.isEnabledFor(logging.DEBUG) else "2"
    return {"TF_CPP_MIN_LOG_LEVEL": level, **os.environ}


class _Process:
    """One trainer process and its two pipes."""

    def __init__(self, data_dir: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "movie_embeddings_server.training.worker", str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=_environment(),
        )
        self._send_lock = threading.Lock()
        self.jobs = 0
        # Its messages, read on a thread of their own so that a cancel can wake the job's
        # reader even while the process says nothing (e.g. still importing TensorFlow).
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, name="trainer-output", daemon=True).start()

    def send(self, **message: Any) -> None:
        with self._send_lock:
            try:
                assert self.popen.stdin is not None
                self.popen.stdin.write(json.dumps(message) + "\n")
                self.popen.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # it has exited: its reader sees the end of its output

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.popen.stdout:
            for line in self.popen.stdout:
                self.messages.put(json.loads(line))
        self.messages.put(None)  # it has exited

    def close(self) -> None:
        """Stop it; called between jobs (or once it has failed), when it holds no work."""
        with self._send_lock:
            assert self.popen.stdin is not None
            self.popen.stdin.close()
        self.popen.terminate()
        try:
            self.popen.wait(KILL_AFTER)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class TrainJob:
    """A training in progress: iterate for its epochs then its stored version; cancel any time."""

    def __init__(self, trainer: Trainer, process: _Process, job_id: int, name: str) -> None:
        self._trainer = trainer
        self._process = process
        self._id = job_id
        self.name = name
        self._lock = threading.Lock()
        self._ended = False
        self._cancelled = False
        self._killer: threading.Timer | None = None

    @property
    def pid(self) -> int:
        """The trainer process running it."""
        return self._process.popen.pid

    def cancel(self) -> None:
        """Stop the training (from any thread); nothing of it is stored."""
        with self._lock:
            if self._ended or self._cancelled:
                return
            self._cancelled = True
            self._process.send(stop=self._id)
            self._process.messages.put({"wake": self._id})
            self._killer = threading.Timer(KILL_AFTER, self._process.popen.kill)
            self._killer.daemon = True
            self._killer.start()

    def _end(self) -> bool:
        """Mark the job ended; True if it was cancelled first."""
        with self._lock:
            self._ended = True
            if self._killer:
                self._killer.cancel()
            return self._cancelled

    def _receive(self) -> dict[str, Any] | None:
        """The process's next message for this job, or this job's wake-up after a cancel
        (a wake-up left over from an earlier job on the process is skipped)."""
        while True:
            message = self._process.messages.get()
            if message is None or message.get("wake", self._id) == self._id:
                return message

    def __iter__(self) -> Iterator[Epoch | ServedModel]:
        message = None
        outcome = "failed"
        try:
            while (message := self._receive()) is not None and "epoch" in message:
                yield Epoch(**message["epoch"])
            if message is not None and "wake" in message:
                outcome = "cancelled"
                raise Cancelled("training was cancelled")
            cancelled = self._end()
            if message is not None and "staged" in message:
                staged = Path(message["staged"])
                if not cancelled:
                    served = self._trainer.store.commit(self.name, staged)
                    outcome = "finished"
                    yield served
                    return
                self._trainer.store.discard(staged)
            if cancelled or (message is not None and "cancelled" in message):
                outcome = "cancelled"
                raise Cancelled("training was cancelled")
            if message is not None and "refused" in message:
                raise refused_error(message["refused"])
            if message is None:
                raise RuntimeError(
                    f"the trainer process exited (code {self._process.popen.wait()})"
                )
            raise RuntimeError(f"training {self.name!r} failed: {message['error']}")
        finally:
            if self._ended:  # the process has answered to the end: it can take the next job
                self._trainer._release(self, self._process, message is not None, outcome)
            else:  # cancelled, or the caller stopped listening: stop the work it asked for
                self.cancel()
                threading.Thread(target=self._drain, name="train-drain", daemon=True).start()

    def _drain(self) -> None:
        """Wait, off the caller's thread, for the process to end the cancelled job (within one
        TensorFlow call, or at once if it had not started), then free the process."""
        while (message := self._receive()) is not None and not (
            "staged" in message
            or "cancelled" in message
            or "error" in message
            or "refused" in message
        ):
            pass
        if message is not None and "staged" in message:
            self._trainer.store.discard(Path(message["staged"]))
        self._end()
        self._trainer._release(self, self._process, message is not None, "cancelled")


class Trainer:
    """Runs at most `max_concurrent` trainings at once, each in a trainer process."""

    def __init__(
        self,
        store: Store,
        max_concurrent: int = 1,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        """`on_outcome` hears of each training: "started", then "finished", "cancelled" or
        "failed"."""
        self.store = store
        self._on_outcome = on_outcome or (lambda _: None)
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._lock = threading.Lock()
        self._idle: list[_Process] = []
        self._jobs: set[TrainJob] = set()
        self._ids = itertools.count(1)
        self._closed = False

    def warm(self) -> None:
        """Start one trainer process now, so that the first Train does not wait for TensorFlow."""
        with self._lock:
            if not self._idle:
                self._idle.append(_Process(self.store.root))

    def start(
        self,
        name: str,
        source: SyntheticSpec | DatasetTrainingSpec,
        spec: TrainSpec,
        wait: bool = False,
    ) -> TrainJob:
        """Hand a training on `source` (synthetic data or a stored dataset) to a free trainer
        process; without `wait`, refuse when none is free."""
        if self._closed:  # said first: a cancelled job may hold its slot a while (_drain)
            raise Cancelled("the server is shutting down")
        if not self._slots.acquire(blocking=wait):
            raise ResourceExhausted(
                f"{self.max_concurrent} training(s) already running (the server's "
                "--max-concurrent-trains); retry when one has finished"
            )
        with self._lock:
            if self._closed:
                self._slots.release()
                raise Cancelled("the server is shutting down")
            while self._idle and self._idle[-1].popen.poll() is not None:
                self._idle.pop()  # died while idle (killed from outside): replaced below
            process = self._idle.pop() if self._idle else _Process(self.store.root)
            job = TrainJob(self, process, next(self._ids), name)
            self._jobs.add(job)
        kind = "dataset" if isinstance(source, DatasetTrainingSpec) else "synthetic"
        train = {"name": name, kind: asdict(source), "spec": asdict(spec)}
        process.send(id=job._id, train=train)
        log.info("training %r in trainer process %d", name, job.pid)
        self._on_outcome("started")
        return job

    def _release(self, job: TrainJob, process: _Process, healthy: bool, outcome: str) -> None:
        self._on_outcome(outcome)
        process.jobs += 1
        with self._lock:
            self._jobs.discard(job)
            keep = healthy and not self._closed and process.jobs < RECYCLE_AFTER
            if keep:
                self._idle.append(process)
            elif not self._closed:
                self._idle.append(_Process(self.store.root))  # ready for the next Train
        if not keep:
            process.close()
        self._slots.release()

    def train(
        self,
        name: str,
        source: SyntheticSpec | DatasetTrainingSpec,
        spec: TrainSpec,
        on_epoch: Callable[[Epoch], None] = lambda _: None,
    ) -> ServedModel:
        """Train to the end on this thread, waiting for a free trainer process if need be."""
        for event in self.start(name, source, spec, wait=True):
            if isinstance(event, ServedModel):
                return event
            on_epoch(event)
        raise AssertionError("a finished training yields its version")

    def close(self) -> None:
        """Cancel every training and stop every trainer process (the server is shutting down)."""
        with self._lock:
            self._closed = True
            jobs, idle, self._idle = list(self._jobs), self._idle, []
        for job in jobs:
            job.cancel()
        for process in idle:
            process.close()
