"""Soak: mixed RPCs from several callers for a set time while a Train runs every few seconds.

    python benchmarks/soak.py [--seconds 120] [--callers 4] [--train-every 5]

Starts a `movie-embeddings serve` process on a fresh store (127.0.0.1), then runs callers
that loop over GetMovieVector, BatchGetMovieVectors, NearestMovies, Reconstruct (one watcher
and a batch of 100), ListModels and GetModel, while another caller trains a new version of
`soak` every --train-every seconds. Prints calls, failures (the target is 0), latency
percentiles overall, while a Train runs and while none does, and the resident memory of the
server and of its trainer process at the start and at the end. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import movie_embeddings as me
from movie_embeddings_server.serving.process import child_pids, rss_mb, start_server


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120, help="length (default: 120)")
    parser.add_argument("--callers", type=int, default=4, help="query callers (default: 4)")
    parser.add_argument(
        "--train-every", type=float, default=5, help="seconds between Trains (default: 5)"
    )
    args = parser.parse_args()
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
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
