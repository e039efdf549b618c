"""Serving speed against a bare grpcio server, generator and Train speed, server memory.

    python benchmarks/serve_bench.py [--quick] [--slowed]

Starts a `movie-embeddings serve` process and bare grpcio servers (benchmarks/bare_server.py,
threads and asyncio) in their own processes on 127.0.0.1, warms up, interleaves the
measurements so machine noise hits both alike, and prints a Markdown table of figures and
ratios. Nothing here asserts: the targets are printed beside the figures. A second server on
the same store runs with MOVIE_EMBEDDINGS_HANDLER_CPU=1, so each of its answers carries its
handler's CPU time (`handler-cpu-us` trailing metadata), printed per query for the 80-movie
default model and for a 59,047-movie model with random weights (saved through the store:
training one takes minutes, and speed does not depend on the weights); the other rows are
measured on a server without that wrapper (it cost 8 callers ~10 % of their calls/s).

--slowed runs the servers (ours and the bare one) as on a slower CPU: every thread of theirs
pinned to core 0, shared with a process that only burns CPU, while this client runs on the
other cores; it prints the latency, throughput, batch and large-catalogue rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np

import movie_embeddings as me
from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc
from movie_embeddings_server.model.catalogue import Catalogue
from movie_embeddings_server.serving.malloc import reuse_freed_memory
from movie_embeddings_server.serving.process import (
    ServerProcess,
    child_pids,
    rss_mb,
    start_server,
    wait_quiet,
)
from movie_embeddings_server.serving.rpc import HANDLER_CPU_ENV
from movie_embeddings_server.store.models import Store, new_metadata
from movie_embeddings_server.training.synthetic import generate

# benchmarks/ is on sys.path when this runs as a script (and for scale.py, which imports it).
from make_movielens_like import sparse_movie_ids  # isort: skip

HERE = Path(__file__).resolve().parent


@dataclass
class Bare:
    """A bare grpcio server process and a raw-bytes callable on it."""

    process: subprocess.Popen
    target: str

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def start_bare(asyncio: bool) -> Bare:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "bare_server.py"), *(["--asyncio"] if asyncio else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
    if not found:
        process.kill()
        raise RuntimeError(f"bare server did not start: {line!r}")
    return Bare(process, found.group(1))


def latencies(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def interleaved(
    calls: dict[str, Callable[[], object]], rounds: int, n: int
) -> dict[str, list[float]]:
    """Latencies of each call, taken in turns of n calls for `rounds` rounds."""
    out: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        latencies(call, 50)  # warm-up
    for _ in range(rounds):
        for name, call in calls.items():
            out[name] += latencies(call, n)
    return out


def throughput(
    make_call: Callable[[], Callable[[], object]], callers: int, seconds: float
) -> float:
    """Calls per second from `callers` threads, each with its own channel, for `seconds`."""
    counts = [0] * callers
    stop = threading.Event()
    ready = threading.Barrier(callers + 1)

    def work(i: int) -> None:
        call = make_call()
        call()
        ready.wait()
        while not stop.is_set():
            call()
            counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - start
    for t in threads:
        t.join(30)
    return sum(counts) / elapsed


def bare_call(target: str, sent: int = 16, answered: int = 64) -> Callable[[], object]:
    """A bare call sending `sent` bytes and answered with `answered` bytes (by default about a
    GetMovieVector's)."""
    method = grpc.insecure_channel(target).unary_unary("/bare.Bare/Call")
    request = answered.to_bytes(8, "little") + bytes(sent - 8)
    return lambda: method(request, timeout=10)


def stub_call(target: str, method: str, request: object) -> Callable[[], object]:
    stub = pb_grpc.MovieEmbeddingServiceStub(grpc.insecure_channel(target))
    fn = getattr(stub, method)
    return lambda: fn(request, timeout=10)


def notebook_generator(n_p: int, movies: int = 80, types: int = 10) -> np.ndarray:
    """The notebook's cells, as written (a Python loop per watcher)."""
    people = np.random.randint(types, size=n_p)

    def get_like(i: int) -> np.ndarray:
        t = people[i]
        draws = np.random.random(movies)
        like = np.array([0.95 if abs(m % types - t) < 3 else 0.05 for m in range(movies)])
        return (like > draws).astype(int)

    ratings = np.zeros((len(people), movies))
    for i in range(len(ratings)):
        ratings[i] = get_like(i)
    age = np.maximum(np.random.normal(20 + people * 5, scale=10).astype(int), 15)
    age = (age - age.mean()) / age.std()
    education = np.zeros(len(ratings), dtype=int)
    for i in range(len(ratings)):
        education[i] = np.random.randint(people[i] % 2, people[i] % 5 + people[i] % 2 + 1)
    return np.hstack((age[:, None], education[:, None], ratings))


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, figure: str, ratio: str = "", target: str = "") -> None:
        self.rows.append((what, figure, ratio, target))
        print(f"  {what}: {figure} {ratio}", file=sys.stderr, flush=True)

    def markdown(self) -> str:
        lines = ["| measurement | figure | ratio | target |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def bench_latency(table: Table, server: ServerProcess, bare: Bare, rounds: int, n: int) -> None:
    watcher = pb.Watcher(liked_movie_ids=[0, 1, 2, 10, 11, 12], age_years=30, education=1)
    calls = {
        "bare": bare_call(bare.target),
        "GetMovieVector": stub_call(
            server.target, "GetMovieVector", pb.GetMovieVectorRequest(movie_id=3)
        ),
        "NearestMovies k=10": stub_call(
            server.target, "NearestMovies", pb.NearestMoviesRequest(movie_id=3, k=10)
        ),
        "Reconstruct 1 watcher, top_k 10": stub_call(
            server.target, "Reconstruct", pb.ReconstructRequest(watchers=[watcher], top_k=10)
        ),
    }
    with me.Client(server.target) as client:
        calls["SDK nearest_movies k=10"] = lambda: client.nearest_movies(3, k=10)
        found = interleaved(calls, rounds, n)
    base = p(found["bare"], 50)
    table.add("bare grpcio unary (threads)", f"p50 {ms(base)}, p99 {ms(p(found['bare'], 99))}")
    for name, values in found.items():
        if name == "bare":
            continue
        target = "" if name.startswith("SDK") else "≤ 1.3x"
        table.add(
            name,
            f"p50 {ms(p(values, 50))}, p99 {ms(p(values, 99))}",
            f"{p(values, 50) / base:.2f}x bare p50",
            target,
        )


def bench_during_train(table: Table, server: ServerProcess, rounds: int, n: int) -> None:
    """NearestMovies latency while a Train runs in the trainer process, against idle."""
    call = stub_call(server.target, "NearestMovies", pb.NearestMoviesRequest(movie_id=3, k=10))
    idle = interleaved({"idle": call}, rounds, n)["idle"]
    with me.Client(server.target) as client:
        stream = client.train("busy", num_watchers=20_000, epochs=100, seed=1)
        next(stream)  # the first epoch is done: training is in full swing
        busy = interleaved({"busy": call}, rounds, n)["busy"]
        stream.close()  # cancels it
    table.add(
        "NearestMovies k=10 while a Train (20,000 x 80) runs in the trainer process",
        f"p50 {ms(p(busy, 50))}, p99 {ms(p(busy, 99))}",
        f"{p(busy, 99) / p(idle, 99):.2f}x idle p99 ({ms(p(idle, 99))})",
    )


def bench_throughput(table: Table, server: ServerProcess, bare: Bare, seconds: float) -> None:
    """8 callers of each, in turns of `seconds` (6 turns): the median of the turns' ratios,
    as one pair of samples moves by +-0.15 here."""
    request = pb.NearestMoviesRequest(movie_id=3, k=10)
    bare_rates, our_rates = [], []
    for _ in range(6):
        bare_rates.append(throughput(lambda: bare_call(bare.target), 8, seconds))
        our_rates.append(
            throughput(lambda: stub_call(server.target, "NearestMovies", request), 8, seconds)
        )
    ratios = [ours / base for ours, base in zip(our_rates, bare_rates, strict=True)]
    table.add("bare grpcio, 8 concurrent callers", f"{statistics.median(bare_rates):,.0f} calls/s")
    table.add(
        "NearestMovies k=10, 8 concurrent callers",
        f"{statistics.median(our_rates):,.0f} calls/s (turns: {min(ratios):.2f}-"
        f"{max(ratios):.2f}x)",
        f"{statistics.median(ratios):.2f}x bare",
        "≥ 0.85x",
    )


def bench_batch(
    table: Table, server: ServerProcess, timed: ServerProcess, bare: Bare, repeats: int
) -> None:
    """1,000 watchers in one call, beside a bare call moving as many bytes each way."""
    fresh = generate(1000, 80, 10, 123)
    ratings = fresh.ratings.astype(np.float32)
    batch = pb.WatcherBatch(
        ratings=ratings.tobytes(), age_years=fresh.age_years, education=fresh.education
    )
    request = pb.ReconstructRequest(batch=batch, top_k=10)
    answer = stub_call(server.target, "Reconstruct", request)()
    sizes = (request.ByteSize(), answer.ByteSize())  # type: ignore[attr-defined]
    floor = bare_call(bare.target, *sizes)
    floor()
    floor_rate = 1000 / statistics.median(latencies(floor, repeats))
    with me.Client(server.target) as client:
        for label, call in {
            "reconstruct_batch (dense arrays)": lambda: client.reconstruct_batch(
                ratings, age_years=fresh.age_years, education=fresh.education, top_k=10
            ),
            "reconstruct_many (a message per watcher)": lambda: client.reconstruct_many(
                [
                    me.Watcher(float(a), int(e), ratings=r)
                    for r, a, e in zip(ratings, fresh.age_years, fresh.education, strict=True)
                ],
                top_k=10,
            ),
        }.items():
            call()
            median = statistics.median(latencies(call, repeats))
            dense = "batch" in label
            table.add(
                f"Reconstruct 1,000 watchers, top_k 10, in one call: SDK {label}, end to end",
                f"{1000 / median:,.0f} watchers/s ({ms(median)} per call)",
                f"{1000 / median / floor_rate:.2f}x the bare floor" if dense else "",
                "≥ 150,000/s" if dense else "",
            )
    table.add(
        f"the bare floor: a bare grpcio call moving the same bytes ({sizes[0] / 1000:.0f} kB "
        f"in, {sizes[1] / 1000:.0f} kB out)",
        f"{floor_rate:,.0f} watchers/s ({ms(1000 / floor_rate)} per call)",
    )
    table.add(
        "handler CPU (thread_time), Reconstruct 1,000 watchers in a WatcherBatch, 80 movies",
        f"{handler_us(timed.target, 'Reconstruct', [request], 3 * repeats) / 1000:.2f} ms",
    )


def bench_big_catalogue(
    table: Table, server: ServerProcess, bare: Bare, rounds: int, n: int
) -> None:
    with me.Client(server.target) as client:
        start = time.perf_counter()
        for _ in client.train("big", num_movies=100_000, num_watchers=100, epochs=1, seed=1):
            pass
        train_seconds = time.perf_counter() - start
    request = pb.NearestMoviesRequest(model=pb.ModelRef(name="big"), movie_id=12345, k=10)
    found = interleaved(
        {"bare": bare_call(bare.target), "big": stub_call(server.target, "NearestMovies", request)},
        rounds,
        n,
    )
    base, big = p(found["bare"], 50), p(found["big"], 50)
    table.add(
        "NearestMovies k=10, 100,000 movies",
        f"p50 {ms(big)}, p99 {ms(p(found['big'], 99))} (Train {train_seconds:.1f} s)",
        f"{big / base:.2f}x bare p50",
        "≤ 1.5x",
    )


BIG = "big59k"  # the large-catalogue model's name
BIG_MOVIES = 59_047  # MovieLens-25M's catalogue


def save_random_model(
    data_dir: Path,
    name: str,
    movies: int,
    seed: int,
    *,
    dim: int = 64,
    hidden: int = 256,
    movielens_ids: bool = True,
) -> Catalogue:
    """A version with glorot-uniform weights, saved through the store: by default at the
    earlier dataset default sizes (embedding 64, hidden 256; the present ones are 200 / 600)
    over `movies` movies with MovieLens-like ids and titles; without `movielens_ids`, ids
    0..movies-1 and no titles, as a synthetic world's."""
    rng = np.random.default_rng(seed)

    def glorot(rows: int, cols: int) -> np.ndarray:
        limit = np.sqrt(6 / (rows + cols))
        return rng.uniform(-limit, limit, (rows, cols)).astype(np.float32)

    weights = {
        "embedding": glorot(movies, dim),
        "hidden_kernel": glorot(2 + dim, hidden),
        "hidden_bias": rng.normal(0, 0.1, hidden).astype(np.float32),
        "output_kernel": glorot(hidden, movies),
        "output_bias": rng.normal(-3, 1, movies).astype(np.float32),
    }
    if movielens_ids:
        ids = sparse_movie_ids(rng, movies)
        catalogue = Catalogue(ids, np.array([f"Movie {m} (1999)" for m in ids]), None, None)
    else:
        catalogue = Catalogue.identity(movies)
    meta = new_metadata(
        synthetic={"num_watchers": 0, "num_movies": movies, "num_types": 1, "seed": seed},
        training={"embedding_dim": dim, "hidden_units": hidden},
        metrics={},
        history=[],
        age_mean=30.0,
        age_std=10.0,
    )
    store = Store(data_dir)
    store.commit(name, store.stage(name, None, weights, meta, catalogue))
    return catalogue


def handler_us(target: str, method: str, requests: list[object], n: int) -> float:
    """Median CPU time of the server's handler per call (its `handler-cpu-us`), in turns over
    `requests`, after a warm-up round."""
    stub = pb_grpc.MovieEmbeddingServiceStub(grpc.insecure_channel(target))
    call = getattr(stub, method).with_call
    found = []
    for i in range(n + len(requests)):
        _, done = call(requests[i % len(requests)], timeout=30)
        found.append(float(dict(done.trailing_metadata())["handler-cpu-us"]))
    return statistics.median(found[len(requests) :])


def queries(model: pb.ModelRef, ids: list[int], liked: list[int]) -> dict[str, list[object]]:
    """The queries whose handler CPU is reported, by label."""
    watcher = pb.Watcher(liked_movie_ids=liked, age_years=30, education=1)
    return {
        "GetMovieVector": [pb.GetMovieVectorRequest(model=model, movie_id=ids[0])],
        "NearestMovies by id, k=10": [pb.NearestMoviesRequest(model=model, movie_id=ids[0], k=10)],
        "NearestMovies by id, k=10, a new movie each call (no memo)": [
            pb.NearestMoviesRequest(model=model, movie_id=i, k=10, exclude_movie_ids=[ids[0]])
            for i in ids[1:]
        ],
        "Reconstruct 1 watcher, 20 liked ids, top_k 10": [
            pb.ReconstructRequest(model=model, watchers=[watcher], top_k=10)
        ],
    }


def start_timed(data_dir: Path, log: Path) -> ServerProcess:
    """Another server on `data_dir`'s store whose answers carry `handler-cpu-us`."""
    os.environ[HANDLER_CPU_ENV] = "1"  # inherited by the server process only
    try:
        server = start_server(data_dir, log)
    finally:
        del os.environ[HANDLER_CPU_ENV]
    wait_quiet(server.process.pid)
    return server


def bench_handler_cpu(table: Table, timed: ServerProcess, big: Catalogue, n: int) -> None:
    """The handler's CPU per call (wrapper, validation, numpy, building the answer), for the
    default 80-movie model and the 59,047-movie one, on the `start_timed` server."""
    rng = np.random.default_rng(3)
    for label, model, movie_ids in (
        ("80 movies", pb.ModelRef(), np.arange(80)),
        (f"{BIG_MOVIES:,} movies", pb.ModelRef(name=BIG), big.movie_ids),
    ):
        ids = rng.choice(movie_ids, 60, replace=False).tolist()
        for what, requests in queries(model, ids, ids[40:]).items():
            goal = "≤ 80 µs" if what.startswith("Reconstruct") else "≤ 40 µs"
            if what.startswith("Reconstruct") and model.name:
                goal = "(floor: reading the 60 MB output layer)"
            table.add(
                f"handler CPU (thread_time), {what}, {label}",
                f"{handler_us(timed.target, what.split()[0], requests, n):.0f} µs",
                "",
                "" if "new movie" in what else goal,
            )


def bench_big_queries(
    table: Table, server: ServerProcess, bare: Bare, big: Catalogue, rounds: int, n: int
) -> None:
    """NearestMovies and Reconstruct on the 59,047-movie model against a bare call."""
    ids = big.movie_ids[::2953].tolist()
    requests = queries(pb.ModelRef(name=BIG), ids, ids[:20])
    calls = {"bare": bare_call(bare.target)}
    for what in ("NearestMovies by id, k=10", "Reconstruct 1 watcher, 20 liked ids, top_k 10"):
        calls[what] = stub_call(server.target, what.split()[0], requests[what][0])
    found = interleaved(calls, rounds, n)
    base = p(found["bare"], 50)
    for what, values in found.items():
        if what != "bare":
            table.add(
                f"{what}, {BIG_MOVIES:,} movies (random weights)",
                f"p50 {ms(p(values, 50))}, p99 {ms(p(values, 99))}",
                f"{p(values, 50) / base:.2f}x bare p50",
                "≤ 1.5x",
            )


def slow_down(pids: list[int]) -> subprocess.Popen:
    """Pin every thread of `pids` to core 0 beside a process that only burns CPU there, and
    this process to the other cores: a CPU half as fast, for them. The server's trainer
    process is left alone (a Train is not what this measures)."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    for pid in [*pids, burner.pid]:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), {0})
    os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)) or {0})
    return burner


def bench_generator(table: Table, watchers: int) -> None:
    """Rates as the best of two runs each; memory in a third run, under tracemalloc."""
    n = 10_000

    def rate(make: Callable[[], object], count: int) -> float:
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            make()
            best = min(best, time.perf_counter() - start)
        return count / best

    loop_rate = rate(lambda: notebook_generator(n), n)
    ours_small = rate(lambda: generate(n, 80, 10, 1), n)
    ours_rate = rate(lambda: generate(watchers, 80, 10, 1), watchers)
    tracemalloc.start()
    data = generate(watchers, 80, 10, 1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result = data.ratings.nbytes + data.types.nbytes + data.age_years.nbytes + data.education.nbytes
    table.add("notebook generator loop (10,000 watchers)", f"{loop_rate:,.0f} watchers/s")
    table.add(
        f"our generator, {watchers:,} x 80",
        f"{ours_rate:,.0f} watchers/s (10,000: {ours_small:,.0f}/s); peak {peak / 2**20:.0f} MiB "
        f"for a {result / 2**20:.0f} MiB result",
        f"{ours_rate / loop_rate:,.0f}x the loop",
        "≥ 50x",
    )


def bench_train(table: Table) -> None:
    """The Train path (as the trainer process runs it, here in this process) against a plain
    Keras fit of the same config."""
    import keras

    from movie_embeddings_server import config
    from movie_embeddings_server.store.models import Store
    from movie_embeddings_server.training import keras_model as training
    from movie_embeddings_server.training import worker

    synthetic = config.resolve_synthetic({"seed": 5})
    spec = config.resolve_training({})
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))

        def train_path(name: str) -> dict:
            staged = worker.run(store, name, synthetic, spec, lambda _: None, training.StopSignal())
            return store.commit(name, staged).meta["metrics"]

        train_path("warm")  # TensorFlow's first-use costs, for both
        plain, ours, evaluate = [], [], []
        for i in range(3):
            d = generate(synthetic.num_watchers, synthetic.num_movies, synthetic.num_types, 5)
            mean, std = training.age_stats(d.age_years)
            x = [
                d.ratings.astype(np.float32),
                np.column_stack([(d.age_years - mean) / std, d.education]).astype(np.float32),
            ]
            keras.utils.set_random_seed(5)
            start = time.perf_counter()
            model = training.build_model(80, spec, spec.epochs * 16)  # one step per call
            model.fit(x, x[0], epochs=spec.epochs, batch_size=spec.batch_size, verbose=0)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            metrics = train_path(f"m{i}")
            ours.append(time.perf_counter() - start - metrics["evaluate_seconds"])
            evaluate.append(metrics["evaluate_seconds"])
    plain_s, ours_s = statistics.median(plain), statistics.median(ours)
    table.add("plain Keras fit, default config (build + fit)", f"{plain_s:.2f} s")
    table.add(
        "Train path (generate + fit + save), same config, same process",
        f"{ours_s:.2f} s (+ evaluation {statistics.median(evaluate) * 1000:.0f} ms)",
        f"{ours_s / plain_s:.2f}x plain fit",
        "≤ 1.10x",
    )


def bench_memory(table: Table, server: ServerProcess, idle_mb: float) -> None:
    """RSS of the busy server, and of a fresh one serving 20 stored versions."""
    table.add("server RSS idle (default model; no TensorFlow in it)", f"{idle_mb:.0f} MiB")
    table.add("server RSS after the run", f"{rss_mb(server.process.pid):.0f} MiB")
    (trainer,) = child_pids(server.process.pid)
    table.add("its trainer process (TensorFlow) after the run", f"{rss_mb(trainer):.0f} MiB")
    with me.Client(server.target) as client:
        for i in range(20 - len(client.list_models())):
            for _ in client.train(f"v{i}", num_watchers=100, epochs=1, seed=i):
                pass
    with tempfile.TemporaryDirectory() as tmp:
        fresh = start_server(server.data_dir, Path(tmp) / "log")
        try:
            start_mb = rss_mb(fresh.process.pid)
            with me.Client(fresh.target) as client:
                models = client.list_models()
                for info in models:  # a watcher who liked nothing: every layer of each
                    client.reconstruct([], age_years=30, education=1, top_k=10, model=info.ref)
            table.add(
                f"restarted server on that store: RSS at start / after querying all {len(models)} "
                "versions (no TensorFlow)",
                f"{start_mb:.0f} / {rss_mb(fresh.process.pid):.0f} MiB "
                f"(started in {fresh.start_seconds:.1f} s)",
            )
        finally:
            fresh.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer calls and a smaller generator run"
    )
    parser.add_argument(
        "--slowed", action="store_true", help="the servers on one core shared with a CPU burner"
    )
    args = parser.parse_args()
    rounds, n = (3, 200) if args.quick else (10, 500)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    reuse_freed_memory()  # in this, the client's process, as the servers' (bare ones too)
    table = Table()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data", Path(tmp) / "server.log")
        wait_quiet(server.process.pid)
        bare, bare_aio = start_bare(False), start_bare(True)
        burner = None
        timed: ServerProcess | None = None
        try:
            idle_mb = rss_mb(server.process.pid)
            # Saved beside the running server's store; its poll loads it.
            big = save_random_model(server.data_dir, BIG, BIG_MOVIES, 1)
            with me.Client(server.target) as client:
                while BIG not in {m.ref.name for m in client.list_models()}:
                    time.sleep(0.2)
                client.nearest_movies(int(big.movie_ids[0]), model=me.ModelRef(BIG))
            timed = start_timed(server.data_dir, Path(tmp) / "timed.log")
            if args.slowed:
                burner = slow_down([p.process.pid for p in (server, timed, bare, bare_aio)])
            else:
                found = interleaved(
                    {"threads": bare_call(bare.target), "asyncio": bare_call(bare_aio.target)},
                    rounds,
                    n,
                )
                table.add(
                    "bare grpcio unary, asyncio server (for the choice of model)",
                    f"p50 {ms(p(found['asyncio'], 50))}",
                    f"{p(found['asyncio'], 50) / p(found['threads'], 50):.2f}x threads",
                )
            bench_latency(table, server, bare, rounds, n)
            bench_handler_cpu(table, timed, big, n)
            bench_big_queries(table, server, bare, big, rounds, n)
            if not args.slowed:
                bench_during_train(table, server, rounds, n)
            bench_throughput(table, server, bare, 1.0 if args.quick else 3.0)
            bench_batch(table, server, timed, bare, 5 if args.quick else 20)
            bench_big_catalogue(table, server, bare, rounds, n)
            if not args.slowed:
                bench_memory(table, server, idle_mb)
        finally:
            if burner:
                burner.kill()
                burner.wait(timeout=30)
            bare.stop()
            bare_aio.stop()
            server.stop()
            if timed:
                timed.stop()
    if not args.slowed:
        bench_generator(table, 1_000_000)
        bench_train(table)
    how = "servers on one core shared with a CPU burner, " if args.slowed else ""
    how += "every process keeping freed memory (malloc.reuse_freed_memory), "
    print(
        f"Serving benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, {how}Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}\n"
    )
    print(table.markdown())


if __name__ == "__main__":
    main()
