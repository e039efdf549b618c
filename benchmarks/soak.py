"""Soak: mixed RPCs from several callers for a set time, on one server or on two replicas.

    python benchmarks/soak.py [--seconds 120] [--callers 4] [--train-every 5]
    python benchmarks/soak.py --mixed [--minutes 30] [--callers 4] [--cycle-seconds 60]

One server (the default): starts a `movie-embeddings serve` process on a fresh store
(127.0.0.1), then runs callers that loop over GetMovieVector, BatchGetMovieVectors,
NearestMovies, Reconstruct (one watcher and a batch of 100), ListModels and GetModel, while
another caller trains a new version of `soak` every --train-every seconds. Prints calls,
failures (the target is 0), latency percentiles overall, while a Train runs and while none
does, and the resident memory of the server and of its trainer process at the start and at
the end.

--mixed: two replicas, A and B, serve one fresh store (--poll-seconds apart). The callers
query model `soak` (by its label `stable` or its newest version) through a client per
replica, alternating between the replicas that are up: GetMovieVector and NearestMovies by
movie id, NearestMovies by vector, Reconstruct with every probability and with the top k
alone. Every --cycle-seconds an operator imports a small generated dataset through one
replica, trains a version of `soak` on it through the other once that one lists the dataset
(the default preset and the notebook preset in turn; at this size both fit with Keras), moves
the label `stable` to it, and deletes the oldest version beyond --keep (never the labelled
one). Half-way, at the first epoch of a Train running on B, B gets SIGKILL; it is restarted
on the same port as B'. The figures: calls made and failed by RPC, replica and status code
(the killed replica's calls in flight apart), versions and datasets stored and lost (listed
by both replicas at the end), and the RSS, file descriptors and threads of every serving
and trainer process at warm-up (A and B: after the second cycle, their thread pools full; B':
after its second Train), after each cycle and at the end. Nothing here asserts: read the
tables.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import re
import signal
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import movie_embeddings as me
from movie_embeddings_server.serving.process import (
    ServerProcess,
    child_pids,
    rss_mb,
    start_server,
)

# --- one server: queries while a Train runs every few seconds -----------------------------


def _calls(client: me.Client, rng: random.Random) -> list:
    batch = np.random.default_rng(rng.randrange(2**32)).random((100, 80), np.float32)
    return [
        ("GetMovieVector", lambda: client.movie_vector(rng.randrange(80))),
        ("BatchGetMovieVectors", lambda: client.movie_vectors([1, 2, 3, 40])),
        ("NearestMovies", lambda: client.nearest_movies(rng.randrange(80), k=10)),
        (
            "Reconstruct",
            lambda: client.reconstruct([rng.randrange(80)], age_years=30, education=2, top_k=10),
        ),
        (
            "Reconstruct x100",
            lambda: client.reconstruct_batch(
                batch, age_years=np.full(100, 30.0), education=np.ones(100), top_k=10
            ),
        ),
        ("ListModels", client.list_models),
        ("GetModel", client.get_model),
    ]


class Soak:
    """The shared record: per call its end time, latency and whether a Train was running."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: list[tuple[float, bool]] = []  # (latency s, during a Train)
        self.failures: Counter[str] = Counter()
        self.training = threading.Event()
        self.trains = 0
        self.train_failures: list[str] = []


def caller(target: str, seed: int, until: float, soak: Soak) -> None:
    rng = random.Random(seed)
    with me.Client(target) as client:
        calls = _calls(client, rng)
        while time.monotonic() < until:
            name, call = rng.choice(calls)
            during = soak.training.is_set()
            start = time.perf_counter()
            try:
                call()
            except me.MovieEmbeddingsError as exc:
                with soak.lock:
                    soak.failures[f"{name}: {exc.code.name if exc.code else exc}"] += 1
                continue
            latency = time.perf_counter() - start
            with soak.lock:
                soak.samples.append((latency, during or soak.training.is_set()))


def trainer(target: str, every: float, until: float, soak: Soak) -> None:
    with me.Client(target) as client:
        while time.monotonic() + every < until:
            time.sleep(every)
            soak.training.set()
            try:
                for _ in client.train("soak", num_watchers=2000, epochs=5):
                    pass
                soak.trains += 1
            except me.MovieEmbeddingsError as exc:
                soak.train_failures.append(str(exc))
            finally:
                soak.training.clear()


def memory(pid: int) -> tuple[float, float]:
    (trainer_pid,) = child_pids(pid)
    return rss_mb(pid), rss_mb(trainer_pid)


def single(args: argparse.Namespace) -> None:
    soak = Soak()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data", Path(tmp) / "server.log")
        try:
            with me.Client(server.target) as client:  # warm: every RPC once
                for _, call in _calls(client, random.Random(0)):
                    call()
            start_mb = memory(server.process.pid)
            until = time.monotonic() + args.seconds
            threads = [
                threading.Thread(target=caller, args=(server.target, i, until, soak))
                for i in range(args.callers)
            ]
            threads.append(
                threading.Thread(
                    target=trainer, args=(server.target, args.train_every, until, soak)
                )
            )
            for t in threads:
                t.start()
            for t in threads:
                t.join(args.seconds + 300)
            end_mb = memory(server.process.pid)
            with me.Client(server.target) as client:
                versions = len(client.list_models("soak"))
        finally:
            code = server.stop()
    latency = np.array([s for s, _ in soak.samples]) * 1000
    during = np.array([s for s, d in soak.samples if d]) * 1000
    idle = np.array([s for s, d in soak.samples if not d]) * 1000

    def pct(a: np.ndarray, q: float) -> str:
        return f"{np.percentile(a, q):.2f} ms" if len(a) else "-"

    print(
        f"Soak, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}: {args.seconds:g} s, "
        f"{args.callers} callers, a Train (2,000 x 80, 5 epochs) every {args.train_every:g} s\n"
    )
    rows = [
        ("calls answered", f"{len(latency):,} ({len(latency) / args.seconds:,.0f}/s)"),
        ("failed calls", f"{sum(soak.failures.values())} {dict(soak.failures) or ''}".strip()),
        ("Trains completed / failed", f"{soak.trains} / {len(soak.train_failures)}"),
        ("versions of `soak` served at the end", str(versions)),
        ("p50 / p99 / max, all calls", " / ".join(pct(latency, q) for q in (50, 99, 100))),
        (
            f"p50 / p99 while a Train runs ({len(during):,} calls)",
            f"{pct(during, 50)} / {pct(during, 99)}",
        ),
        (f"p50 / p99 while none runs ({len(idle):,} calls)", f"{pct(idle, 50)} / {pct(idle, 99)}"),
        ("server RSS start / end", f"{start_mb[0]:.0f} / {end_mb[0]:.0f} MiB"),
        ("trainer process RSS start / end", f"{start_mb[1]:.0f} / {end_mb[1]:.0f} MiB"),
        ("server exit code on SIGTERM", str(code)),
    ]
    _table(("figure", "value"), rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


# --- mixed: two replicas, queries, an operator's cycle, a replica killed -------------------

MODEL = "soak"
LABEL = "stable"
DATASET = "soak-data"
NUM_MOVIES = 120
MOVIE_IDS = 11 + 7 * np.arange(NUM_MOVIES)  # the dataset's own ids, not 0..n-1
NUM_WATCHERS = 600
RATED_PER_WATCHER = 30  # 18,000 ratings an import
TRAIN: dict[str, Any] = {"epochs": 3, "embedding_dim": 16, "hidden_units": 64}
# Trains alternate (by seed) between the two presets a dataset can be trained with (at this
# size the default's trainer is Keras's dense fit too: config.DENSE_CELLS).
PRESETS = ("default", "notebook")
WARM_CYCLES = 2  # A's and B's warm-up figures: after this many cycles under the callers' load
QUERIES = (
    "GetMovieVector",
    "NearestMovies (id)",
    "NearestMovies (vector)",
    "Reconstruct",
    "Reconstruct (top-k only)",
)
CALL_TIMEOUT = 15.0  # seconds: a call that hangs ends DEADLINE_EXCEEDED, and shows
MAX_CALLS = 50_000_000  # per caller: a bound far above what 30 minutes allow
START_TIMEOUT = 180.0  # seconds for a replica to restart on a busy machine


def soak_dataset(seed: int) -> dict[str, Any]:
    """A dataset of 4 tastes: each watcher rates 30 of 120 movies, high those of its type."""
    rng = np.random.default_rng(seed)
    watcher_ids = np.arange(1, NUM_WATCHERS + 1) * 3
    taste = rng.integers(0, 4, NUM_WATCHERS)
    rated = np.argsort(rng.random((NUM_WATCHERS, NUM_MOVIES)), axis=1)[:, :RATED_PER_WATCHER]
    liked = (np.arange(NUM_MOVIES) % 4)[rated] == taste[:, None]
    noise = rng.normal(0, 0.7, rated.shape)
    ratings = np.round(np.clip(np.where(liked, 4.5, 2.0) + noise, 0.5, 5.0) * 2) / 2
    genres = np.array(["Drama", "Comedy|Romance", "Action|Sci-Fi", "Horror|Thriller"])
    return {
        "ratings": me.RatingColumns(
            np.repeat(watcher_ids, RATED_PER_WATCHER), MOVIE_IDS[rated].ravel(), ratings.ravel()
        ),
        "movies": me.MovieColumns(
            MOVIE_IDS,
            np.array([f"Soak film {m} ({1950 + m % 70})" for m in MOVIE_IDS], dtype=object),
            genres[np.arange(NUM_MOVIES) % 4].astype(object),
        ),
        "watchers": me.WatcherColumns(
            watcher_ids, rng.uniform(18, 70, NUM_WATCHERS), rng.integers(0, 4, NUM_WATCHERS)
        ),
    }


@dataclass
class Proc:
    """A process's figures at one moment."""

    pid: int
    rss_mb: float
    fds: int
    threads: int


def proc_figures(pid: int) -> Proc | None:
    """RSS, open file descriptors and threads of a live process, from /proc (None: gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return Proc(pid, rss_mb(pid), fds, threads)


def gone(pid: int) -> bool:
    """A process that has exited (a zombie no one reaped counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


@dataclass
class Replica:
    """One serving process: B and B' (B restarted after its kill) are two."""

    name: str
    server: ServerProcess
    up: bool = True
    killed_at: float | None = None  # monotonic time of its SIGKILL
    up_at: float = field(default_factory=time.monotonic)  # when it was SERVING
    warm: dict[str, Proc | None] = field(default_factory=dict)  # "serve", "trainer"
    end: dict[str, Proc | None] = field(default_factory=dict)
    samples: list[dict[str, Proc | None]] = field(default_factory=list)  # after each cycle
    exit_code: int | str = "-"
    trains: int = 0  # Trains it reported

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def figures(self) -> dict[str, Proc | None]:
        trainers = child_pids(self.pid) if not gone(self.pid) else []
        return {
            "serve": proc_figures(self.pid),
            "trainer": proc_figures(trainers[-1]) if trainers else None,
        }


class Record:
    """Every call: by (RPC, replica) made, by (RPC, replica, code) failed; the latencies of
    answered queries; the killed replica's calls running at its kill, by code."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made: Counter[tuple[str, str]] = Counter()
        self.failed: Counter[tuple[str, str, str]] = Counter()
        self.first_message: dict[tuple[str, str, str], str] = {}
        self.latency_ms: dict[str, array] = {}
        self.in_flight: Counter[str] = Counter()  # code -> calls running at the kill
        self.after_kill: Counter[str] = Counter()  # code -> calls started after it
        # By replica: when (seconds after it was SERVING) its other calls failed, and when
        # it first answered one.
        self.failed_at: dict[str, list[float]] = {}
        self.first_answer: dict[str, float] = {}

    def call(self, rpc: str, replica: Replica, run: Callable[..., Any], *args: Any) -> Any:
        """Run one call, `run(*args)`, on `replica`, record it, and return its answer (None
        if it failed)."""
        start = time.monotonic()
        answer, code, message = None, "OK", ""
        try:
            answer = run(*args)
        except me.MovieEmbeddingsError as exc:
            code, message = (exc.code.name if exc.code else type(exc).__name__), str(exc)
        end = time.monotonic()
        with self.lock:
            self.made[rpc, replica.name] += 1
            if code != "OK":
                self.failed[rpc, replica.name, code] += 1
                self.first_message.setdefault((rpc, replica.name, code), message[:300])
            elif rpc in QUERIES:
                self.latency_ms.setdefault(rpc, array("d")).append((end - start) * 1000)
            if replica.killed_at is not None and start <= replica.killed_at <= end:
                self.in_flight[code] += 1
            elif replica.killed_at is not None and start > replica.killed_at:
                self.after_kill[code] += 1
            elif code != "OK":
                self.failed_at.setdefault(replica.name, []).append(start - replica.up_at)
            else:
                self.first_answer.setdefault(replica.name, start - replica.up_at)
        return answer


class Mixed:
    """The mixed soak's shared state: replicas, the record, the versions and datasets."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.data = root / "data"
        self.record = Record()
        self.lock = threading.Lock()
        self.replicas: list[Replica] = []
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.reported: list[int] = []  # versions of MODEL a Train reported
        self.deleted: list[int] = []
        self.labelled = 0
        self.imported: list[int] = []  # versions of DATASET an import reported
        self.train_failures: Counter[str] = Counter()
        self.import_lag: list[float] = []  # seconds until the other replica lists an import
        self.label_lag: list[float] = []  # ... until it answers by the moved label
        self.b_training = threading.Event()  # a Train on B has passed its first epoch
        self.kill: dict[str, Any] = {}
        self.started = time.monotonic()

    def flags(self, name: str) -> tuple[str, ...]:
        return ("--server-id", name, "--poll-seconds", str(self.args.poll_seconds))

    def start(self, name: str, *extra: str) -> Replica:
        server = start_server(self.data, self.root / f"{name}.log", *self.flags(name), *extra)
        replica = Replica(name, server)
        with self.lock:
            self.replicas.append(replica)
        return replica

    def up(self) -> list[Replica]:
        with self.lock:
            return [r for r in self.replicas if r.up]

    def clock(self) -> str:
        seconds = time.monotonic() - self.started
        return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"

    def log(self, text: str) -> None:
        print(f"[{self.clock()}] {text}", flush=True)

    def thread(self, name: str, work: Callable[..., None], *args: Any) -> threading.Thread:
        """A thread running `work(*args)`: an unexpected exception is kept for the report,
        and ends the run."""

        def run() -> None:
            try:
                work(*args)
            except Exception as exc:  # reported at the end, and in the log now
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                self.log(f"ERROR in {name}: {exc!r}")
                self.stop.set()

        return threading.Thread(target=run, name=name)


def _query(client: me.Client, rpc: str, rng: random.Random, model: me.ModelRef) -> Any:
    movie = int(MOVIE_IDS[rng.randrange(NUM_MOVIES)])
    liked = [int(m) for m in rng.sample(list(MOVIE_IDS), 5)]
    if rpc == "GetMovieVector":
        return client.movie_vector(movie, model=model)
    if rpc == "NearestMovies (id)":
        return client.nearest_movies(movie, k=10, model=model)
    if rpc == "NearestMovies (vector)":
        vector = [rng.gauss(0, 1) for _ in range(TRAIN["embedding_dim"])]
        return client.nearest_movies(vector=vector, k=10, model=model)
    top_only = rpc == "Reconstruct (top-k only)"
    age, education = rng.uniform(18, 70), rng.randrange(4)
    return client.reconstruct(
        liked, age_years=age, education=education, top_k=10, probabilities=not top_only,
        model=model,
    )  # fmt: skip


def mixed_caller(soak: Mixed, seed: int, until: float) -> None:
    """Queries through one client per replica address, alternating over the replicas that
    are up; B' restarted on B's port is reached through B's client, as an application's
    long-lived client would reach it."""
    rng = random.Random(seed)
    models = [me.ModelRef(MODEL, label=LABEL), me.ModelRef(MODEL)]
    clients: dict[str, me.Client] = {}
    try:
        for n in range(MAX_CALLS):
            if time.monotonic() >= until or soak.stop.is_set():
                return
            up = soak.up()
            if not up:
                time.sleep(0.05)
                continue
            replica = up[n % len(up)]
            target = replica.server.target
            if target not in clients:
                clients[target] = me.Client(target, timeout=CALL_TIMEOUT)
            client, rpc, model = clients[target], rng.choice(QUERIES), rng.choice(models)
            soak.record.call(rpc, replica, _query, client, rpc, rng, model)
    finally:
        for client in clients.values():
            client.close()


def _wait(until: float, condition: Callable[[], bool], every: float = 0.1) -> bool:
    """Poll `condition` until it holds or `until` (monotonic) passes; whether it held."""
    for _ in range(100_000):
        if condition():
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(every)
    return False


class Operator:
    """Every cycle: an import through one replica, a Train on it through the other, the label
    moved to the new version, the oldest version beyond `keep` deleted."""

    def __init__(self, soak: Mixed) -> None:
        self.soak = soak
        self.clients: dict[str, me.Client] = {}

    def client(self, replica: Replica) -> me.Client:
        target = replica.server.target
        if target not in self.clients:
            self.clients[target] = me.Client(target, timeout=CALL_TIMEOUT)
        return self.clients[target]

    def pick(self, n: int) -> Replica:
        """Replica n (modulo) of those up now: a step after a kill goes to a live one."""
        up = self.soak.up()
        return up[n % len(up)]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def cycle(self, n: int) -> None:
        """Cycle n: the import and the label through replica n of those up (at each step),
        the Train and the delete through replica n + 1: with both up, the other one."""
        soak, record = self.soak, self.soak.record
        columns = soak_dataset(n)
        one = self.pick(n)
        info = record.call(
            "ImportDataset",
            one,
            lambda: self.client(one).import_dataset(
                DATASET, **columns, description=f"soak cycle {n}"
            ),
        )
        if info is None:
            return
        soak.imported.append(info.ref.version)
        # The other replica serves the dataset within its poll: wait until it lists it.
        other, since = self.pick(n + 1), time.monotonic()
        listed = _wait(
            since + 5 * soak.args.poll_seconds + 10,
            lambda: any(
                d.ref == info.ref
                for d in record.call(
                    "ListDatasets", other, lambda: self.client(other).list_datasets(DATASET)
                )
                or ()
            ),
        )
        if not listed:
            soak.log(f"{other.name} did not list {DATASET} v{info.ref.version}")
            return
        soak.import_lag.append(time.monotonic() - since)
        version = self.train(self.pick(n + 1), info.ref, seed=n)
        if version is None:
            return
        one = self.pick(n)
        labels = record.call(
            "SetModelLabel", one, lambda: self.client(one).set_model_label(MODEL, LABEL, version)
        )
        if labels is None:
            return
        soak.labelled = version
        other, since = self.pick(n + 1), time.monotonic()
        moved = _wait(
            since + 5 * soak.args.poll_seconds + 10,
            lambda: (
                getattr(
                    record.call(
                        "GetModel",
                        other,
                        lambda: self.client(other).get_model(me.ModelRef(MODEL, label=LABEL)),
                    ),
                    "version",
                    0,
                )
                == version
            ),
        )
        if moved:
            soak.label_lag.append(time.monotonic() - since)
        self.delete_oldest(self.pick(n + 1))

    def train(self, replica: Replica, dataset: me.DatasetRef, seed: int) -> int | None:
        soak = self.soak

        def run() -> me.ModelInfo:
            final = None
            for event in self.client(replica).train(
                MODEL, dataset=dataset, seed=seed, preset=PRESETS[seed % 2], timeout=600, **TRAIN
            ):
                if isinstance(event, me.TrainProgress):
                    if replica.name == "B" and event.step == event.steps:
                        soak.b_training.set()
                else:
                    final = event
            assert final is not None
            return final

        info = soak.record.call("Train", replica, run)
        if info is None:
            soak.train_failures[replica.name] += 1
            return None
        soak.reported.append(info.version)
        replica.trains += 1
        if replica.name == "B'" and replica.trains == len(PRESETS):
            replica.warm = replica.figures()  # its trainer process has run each trainer once
        return info.version

    def delete_oldest(self, replica: Replica) -> None:
        soak = self.soak
        alive = [v for v in soak.reported if v not in soak.deleted]
        if len(alive) <= soak.args.keep:
            return
        oldest = min(v for v in alive if v != soak.labelled)
        deleted = soak.record.call(
            "DeleteModel", replica, lambda: self.client(replica).delete_model(MODEL, oldest)
        )
        if deleted is not None:
            soak.deleted.extend(m.version for m in deleted)

    def run(self, until: float) -> None:
        soak = self.soak
        cycles = math.ceil((until - time.monotonic()) / soak.args.cycle_seconds)
        first = time.monotonic()
        try:
            for n in range(cycles):
                at = first + n * soak.args.cycle_seconds
                if soak.stop.wait(max(0.0, at - time.monotonic())) or at >= until:
                    return
                started = time.monotonic()
                self.cycle(n + 1)
                soak.log(
                    f"cycle {n + 1}/{cycles} in {time.monotonic() - started:.1f} s: "
                    f"versions reported {len(soak.reported)}, deleted {len(soak.deleted)}, "
                    f"label v{soak.labelled}; datasets {len(soak.imported)}; "
                    f"calls {sum(soak.record.made.values()):,}, "
                    f"failed {sum(soak.record.failed.values())}"
                )
                for replica in soak.up():
                    replica.samples.append(replica.figures())
                    if n + 1 == WARM_CYCLES and replica.name in ("A", "B"):
                        replica.warm = replica.samples[-1]
                soak.log("  " + "; ".join(f"{r.name} {_brief(r.samples[-1])}" for r in soak.up()))
        finally:
            self.close()


def kill_and_restart(soak: Mixed, at: float, end: float) -> None:
    """Half-way, at the first epoch of a Train on B (waiting up to two cycles for one): SIGKILL
    B, check its trainer process exits, restart it on the same port as B'."""
    if soak.stop.wait(max(0.0, at - time.monotonic())):
        return
    soak.b_training.clear()
    # Not later than a minute before the end: B' must serve for a while.
    during = soak.b_training.wait(max(0.0, min(2 * soak.args.cycle_seconds + 30, end - at - 60)))
    (b,) = [r for r in soak.up() if r.name == "B"]
    trainers = child_pids(b.pid)
    b.end = b.figures()  # its figures at the kill
    with soak.lock:
        b.up = False  # no new call goes to B
        b.killed_at = time.monotonic()
    os.kill(b.pid, signal.SIGKILL)
    b.server.process.wait(30)
    b.exit_code = b.server.process.returncode
    soak.kill.update(clock=soak.clock(), during_train=during, trainers=trainers)
    soak.log(f"SIGKILL to B (pid {b.pid}), during a Train: {during}")
    exited = _wait(b.killed_at + 60, lambda: all(gone(p) for p in trainers))
    soak.kill["trainer_exit"] = time.monotonic() - b.killed_at if exited else None
    port = b.server.target.rpartition(":")[2]
    started = time.monotonic()
    try:
        restarted = soak.start("B'", "--port", port)
        soak.kill["port"] = f"the same port ({port})"
    except RuntimeError as exc:  # the port is taken: any free one, which the callers then use
        soak.log(f"B' could not take port {port}: {str(exc)[-300:]}")
        restarted = soak.start("B'")
        soak.kill["port"] = f"a new port ({restarted.server.target})"
    soak.kill["restart_seconds"] = time.monotonic() - started
    soak.log(f"B' serving at {restarted.server.target} after {soak.kill['restart_seconds']:.1f} s")


def warm_up(soak: Mixed) -> None:
    """A first dataset, a version trained through each replica with each trainer, the label
    on the newest, and every query on both. The warm-up figures of A and B are taken later,
    after the second cycle, once the callers have filled the replicas' thread pools."""
    operator = Operator(soak)
    a, b = soak.up()
    try:
        info = operator.client(a).import_dataset(DATASET, **soak_dataset(0))
        soak.imported.append(info.ref.version)
        _wait(time.monotonic() + 60, lambda: bool(operator.client(b).list_datasets(DATASET)))
        for seed in range(len(PRESETS)):  # each trainer once in each trainer process
            for replica in (a, b):
                operator.train(replica, info.ref, seed=seed)
        operator.client(a).set_model_label(MODEL, LABEL, soak.reported[-1])
        soak.labelled = soak.reported[-1]
        time.sleep(2 * soak.args.poll_seconds + 1)  # both replicas load both versions
        rng = random.Random(0)
        for replica in (a, b):
            client = operator.client(replica)
            for rpc in QUERIES * 20:
                for model in (me.ModelRef(MODEL, label=LABEL), me.ModelRef(MODEL)):
                    soak.record.call(rpc, replica, _query, client, rpc, rng, model)
    finally:
        operator.close()


def _cell(made: int, failed: Counter[str]) -> str:
    if not made:
        return "-"
    if not failed:
        return f"{made:,} / 0"
    codes = ", ".join(f"{n:,} {code}" for code, n in failed.most_common())
    return f"{made:,} / {codes}"


def _codes(counts: Counter[str]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total:,}: " + ", ".join(f"{n:,} {code}" for code, n in counts.most_common())


def _brief(figures: dict[str, Proc | None]) -> str:
    return ", ".join(
        f"{role} {p.rss_mb:.0f} MiB {p.fds} fds {p.threads} threads"
        for role, p in figures.items()
        if p is not None
    )


def _failed_at(record: Record, name: str) -> str:
    """How many of a replica's calls failed apart from its kill, and when."""
    times = record.failed_at.get(name, [])
    if not times:
        return "0"
    first = record.first_answer.get(name)
    return f"{len(times):,}, {min(times):.1f} to {max(times):.1f} s after it was SERVING" + (
        f" (its first answer: {first:.1f} s after)" if first is not None else ""
    )


def _mib(proc: Proc | None) -> str:
    return f"{proc.rss_mb:.0f} MiB" if proc else "-"


def report(soak: Mixed, ends: dict[str, dict[str, Any]], header: str) -> None:
    record = soak.record
    names = [r.name for r in soak.replicas]
    titles = {"A": "A", "B": "B (killed)", "B'": "B' (restarted)"}
    print(f"\n{header}\n")
    rpcs = [
        *QUERIES,
        "ImportDataset",
        "ListDatasets",
        "Train",
        "SetModelLabel",
        "GetModel",
        "DeleteModel",
    ]
    rows = []
    for rpc in rpcs:
        cells = []
        for name in names:
            failed = Counter(
                {c: n for (r, q, c), n in record.failed.items() if (r, q) == (rpc, name)}
            )
            cells.append(_cell(record.made[rpc, name], failed))
        latency = record.latency_ms.get(rpc)
        pct = " / ".join(f"{np.percentile(latency, q):.1f}" for q in (50, 99)) if latency else "-"
        rows.append((rpc, *cells, pct))
    totals = []
    for name in names:
        codes: Counter[str] = Counter()
        for (_, where, code), n in record.failed.items():
            if where == name:
                codes[code] += n
        made = sum(n for (_, q), n in record.made.items() if q == name)
        totals.append(_cell(made, codes))
    rows.append(("**all**", *totals, ""))
    _table(
        ("RPC", *(f"{titles[n]}: calls / failed" for n in names), "p50 / p99 ms (answered)"),
        rows,
    )
    print()

    expected = sorted(set(soak.reported) - set(soak.deleted))
    kill = soak.kill
    figures = [
        (
            "replica B killed (SIGKILL)",
            f"at {kill.get('clock', '-')} into the run, "
            + (
                "during a Train on it (after its first epoch)"
                if kill.get("during_train")
                else "no Train running on it"
            ),
        ),
        ("B's calls in flight at the kill, by code", _codes(record.in_flight)),
        ("calls sent to B after the kill", _codes(record.after_kill)),
        *((f"other failed calls on {name}", _failed_at(record, name)) for name in names),
        (
            "B's trainer process after the kill",
            f"exited {kill['trainer_exit']:.1f} s after"
            if kill.get("trainer_exit") is not None
            else f"still running: {kill.get('trainers')}",
        ),
        (
            "B restarted as B'",
            f"on {kill['port']}, SERVING {kill['restart_seconds']:.1f} s after its start"
            if "restart_seconds" in kill
            else "-",
        ),
        (
            "an import listed by the other replica after (mean / max)",
            f"{np.mean(soak.import_lag):.2f} / {max(soak.import_lag):.2f} s"
            if soak.import_lag
            else "-",
        ),
        (
            "a label move answered by the other replica after (mean / max)",
            f"{np.mean(soak.label_lag):.2f} / {max(soak.label_lag):.2f} s"
            if soak.label_lag
            else "-",
        ),
        (
            "Trains reported / failed",
            f"{len(soak.reported)} / {sum(soak.train_failures.values())}"
            + (f" ({dict(soak.train_failures)})" if soak.train_failures else ""),
        ),
        (
            f"versions of `{MODEL}`: reported, deleted, expected at the end",
            f"{len(soak.reported)}, {len(soak.deleted)}, {len(expected)} ({expected})",
        ),
    ]
    for name, end in ends.items():
        listed = end.get("versions", [])
        lost = sorted(set(expected) - set(listed))
        extra = sorted(set(listed) - set(expected))
        figures.append(
            (
                f"versions listed by {name} at the end: lost / unexpected",
                f"{listed}: {len(lost)} {lost or ''} / {len(extra)} {extra or ''}".strip(),
            )
        )
    for name, end in ends.items():
        figures.append(
            (
                f"label `{LABEL}` on {name} at the end",
                f"v{end.get('label', '-')} (set: v{soak.labelled})",
            )
        )
    for name, end in ends.items():
        listed = end.get("datasets", [])
        lost = sorted(set(soak.imported) - set(listed))
        figures.append(
            (
                f"datasets imported / listed by {name} / lost",
                f"{len(soak.imported)} / {len(listed)} / {len(lost)} {lost or ''}".strip(),
            )
        )
    staging = [p for p in soak.data.rglob(".tmp-*")]
    size = sum(p.stat().st_size for p in soak.data.rglob("*") if p.is_file())
    figures += [
        (
            "staging directories left in the store",
            f"{len(staging)} {[str(p.relative_to(soak.data)) for p in staging] or ''}".strip(),
        ),
        ("store on disk at the end", f"{size / 2**20:.1f} MiB"),
        (
            "exit codes (B: SIGKILL; others: SIGTERM at the end)",
            ", ".join(f"{r.name} {r.exit_code}" for r in soak.replicas),
        ),
    ]
    if soak.errors:
        figures.append(("errors in the soak itself", "; ".join(soak.errors)))
    _table(("figure", "value"), figures)
    print()

    rows = []
    for replica in soak.replicas:
        for role in ("serve", "trainer"):
            before, after = replica.warm.get(role), replica.end.get(role)
            growth = (
                f"{(after.rss_mb / before.rss_mb - 1) * 100:+.1f} %" if before and after else "-"
            )
            if before and after and before.pid != after.pid:
                growth += f" (replaced: pid {before.pid} -> {after.pid})"
            when = "at the kill" if replica.killed_at is not None else "end"
            seen = [
                p
                for f in (replica.warm, *replica.samples, replica.end)
                if (p := f.get(role)) is not None
            ]
            peak = (
                f"{max(p.rss_mb for p in seen):.0f} MiB, {max(p.fds for p in seen)}, "
                f"{max(p.threads for p in seen)}"
                if seen
                else "-"
            )
            rows.append(
                (
                    f"{replica.name} {role}",
                    str(after.pid if after else before.pid if before else "-"),
                    _mib(before),
                    f"{_mib(after)} ({when})",
                    growth,
                    f"{before.fds if before else '-'} / {after.fds if after else '-'}",
                    f"{before.threads if before else '-'} / {after.threads if after else '-'}",
                    peak,
                )
            )
    _table(
        (
            "process",
            "pid",
            "RSS warm-up",
            "RSS end",
            "growth",
            "fds warm-up / end",
            "threads warm-up / end",
            f"most seen ({len(soak.replicas[0].samples) + 2} samples): RSS, fds, threads",
        ),
        rows,
    )
    for failure, message in sorted(record.first_message.items()):
        print(f"first {' '.join(failure)}: {message}")


def mixed(args: argparse.Namespace) -> None:
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        soak = Mixed(args, Path(tmp))
        ends: dict[str, dict[str, Any]] = {}
        try:
            soak.start("A")  # trains `default` on the empty store
            soak.start("B")
            soak.log(f"A {soak.replicas[0].server.target}, B {soak.replicas[1].server.target}")
            warm_up(soak)
            soak.log(
                "warmed up: " + "; ".join(f"{r.name} {_brief(r.figures())}" for r in soak.replicas)
            )
            begin = time.monotonic()
            soak.started = begin
            until = begin + args.minutes * 60
            threads = [
                soak.thread(f"caller {i}", mixed_caller, soak, i, until)
                for i in range(args.callers)
            ]
            threads.append(soak.thread("operator", Operator(soak).run, until))
            half = begin + args.minutes * 30
            threads.append(soak.thread("kill", kill_and_restart, soak, half, until))
            for t in threads:
                t.start()
            for t in threads:
                t.join(max(0.0, until - time.monotonic()) + START_TIMEOUT + 600)
            soak.stop.set()
            stuck = [t for t in threads if t.is_alive()]
            if stuck:
                soak.errors.append(f"{len(stuck)} thread(s) still running at the end")
            time.sleep(2 * args.poll_seconds + 1)  # every replica has polled the last changes
            for replica in soak.up():
                replica.end = replica.figures()
                with me.Client(replica.server.target, timeout=CALL_TIMEOUT) as client:
                    ends[replica.name] = {
                        "versions": sorted(m.version for m in client.list_models(MODEL)),
                        "datasets": sorted(d.ref.version for d in client.list_datasets(DATASET)),
                        "label": client.get_model(me.ModelRef(MODEL, label=LABEL)).version,
                    }
        finally:
            soak.stop.set()
            for replica in soak.replicas:
                if replica.up:
                    replica.exit_code = replica.server.stop()
            for pid in soak.kill.get("trainers", []):
                if not gone(pid):  # B's trainer outlived B: a defect, reported above; end it
                    os.kill(pid, signal.SIGKILL)
        load_end = os.getloadavg()
        header = (
            f"Mixed soak, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
            f"{os.cpu_count()} cores shared with other work (load average {load_start[0]:.1f} "
            f"at the start, {load_end[0]:.1f} at the end), Python {platform.python_version()}: "
            f"{args.minutes:g} min, {args.callers} callers, 2 replicas on one store "
            f"(--poll-seconds {args.poll_seconds:g}); every {args.cycle_seconds:g} s an import "
            f"({NUM_WATCHERS * RATED_PER_WATCHER:,} ratings, {NUM_WATCHERS} watchers x "
            f"{NUM_MOVIES} movies), a Train on it ({TRAIN['epochs']} epochs, embedding "
            f"{TRAIN['embedding_dim']}, hidden {TRAIN['hidden_units']}; presets "
            f"{' and '.join(PRESETS)} in turn), a label move and a "
            f"delete of the oldest version beyond {args.keep}"
        )
        report(soak, ends, header)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120, help="length (default: 120)")
    parser.add_argument("--callers", type=int, default=4, help="query callers (default: 4)")
    parser.add_argument(
        "--train-every", type=float, default=5, help="seconds between Trains (default: 5)"
    )
    parser.add_argument(
        "--mixed", action="store_true", help="two replicas, an operator's cycle, a replica killed"
    )
    parser.add_argument("--minutes", type=float, default=30, help="--mixed: length (default: 30)")
    parser.add_argument(
        "--cycle-seconds",
        type=float,
        default=60,
        help="--mixed: seconds between cycles (default: 60)",
    )
    parser.add_argument("--keep", type=int, default=3, help="--mixed: versions kept (default: 3)")
    parser.add_argument(
        "--poll-seconds", type=float, default=2.0, help="--mixed: the replicas' (default: 2)"
    )
    args = parser.parse_args()
    mixed(args) if args.mixed else single(args)


if __name__ == "__main__":
    main()
