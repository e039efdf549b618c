"""Serving a 59,047-movie model at the memory floor: top-k Reconstruct and NearestMovies by
vector against numpy reading the layer once, alone and with 8 concurrent callers.

    python benchmarks/floor_bench.py [--waits-us 0,500,1000,2000] [--repeats 2] [--quick]
                                     [--store DATA_DIR --model NAME]

A model at the dataset default sizes (embedding 200, hidden 600) over MovieLens-25M's 59,047
movies, with random weights, is saved to a fresh store (or, with --store, the newest version
of a stored model is served: e.g. one that benchmarks/scale.py trained), and one
`movie-embeddings serve` is started per --batch-wait-us value, with a bare grpcio server beside
it. For each: the floor (numpy's time, in this process, to read the layer once: one
matrix-vector product on one thread, as the server computes a lone call), a single caller's p50
against (floor + a bare call's p50), and the watchers (or queries) answered per second by 8
concurrent callers against a single caller's rate, with the CPU time a call costs the server
and the callers (this process) meanwhile. Nothing here asserts; the targets are
printed beside the figures. --repeats runs everything again, to show the spread.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from threadpoolctl import threadpool_limits

from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings_server.model.inference import ServedModel
from movie_embeddings_server.serving.process import cpu_seconds, start_server, wait_quiet
from movie_embeddings_server.store.models import Store

# benchmarks/ is on sys.path when this runs as a script.
from serve_bench import (  # isort: skip
    BIG,
    BIG_MOVIES,
    Table,
    bare_call,
    interleaved,
    ms,
    p,
    save_random_model,
    start_bare,
    throughput,
)

CALLERS = 8


def floor_seconds(compute: Callable[[], object], n: int) -> float:
    """p50 of `compute` on one BLAS thread, after a warm-up."""
    with threadpool_limits(1):
        for _ in range(5):
            compute()
        found = []
        for _ in range(n):
            start = time.perf_counter()
            compute()
            found.append(time.perf_counter() - start)
    return p(found, 50)


def requests(served: ServedModel, seed: int) -> dict[str, list[object]]:
    """Top-10 Reconstructs of 20 liked ids and NearestMovies by vector, a new query each."""
    rng = np.random.default_rng(seed)
    ids = served.catalogue.movie_ids
    model = pb.ModelRef(name=served.name, version=served.version)
    reconstructs, nearest = [], []
    for _ in range(64):
        liked = rng.choice(ids, 20, replace=False).tolist()
        watcher = pb.Watcher(liked_movie_ids=liked, age_years=30, education=1)
        reconstructs.append(
            pb.ReconstructRequest(
                model=model, watchers=[watcher], top_k=10, recommendations_only=True
            )
        )
        vector = rng.normal(0, 1, served.embedding_dim).astype(np.float32).tolist()
        nearest.append(pb.NearestMoviesRequest(model=model, vector=pb.Vector(values=vector), k=10))
    return {"Reconstruct top 10 (20 liked ids)": reconstructs, "NearestMovies by vector": nearest}


# The label of each method's gathered passes in the server's metrics.
PASSES = {"Reconstruct": "reconstruct", "NearestMovies": "nearest"}


def gathered(url: str, method: str) -> tuple[float, float]:
    """(passes, rows) the server's gathered passes of `method` have counted so far."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("pass") == PASSES[method]
    }
    prefix = "movie_embeddings_gathered_rows"
    return found.get(f"{prefix}_count", 0.0), found.get(f"{prefix}_sum", 0.0)


def rotating(target: str, method: str, queries: list[object]) -> Callable[[], object]:
    """A caller on its own channel sending `queries` in turn (answers left unparsed)."""
    send = grpc.insecure_channel(target).unary_unary(
        f"/movie_embeddings.v1.MovieEmbeddingService/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    turn = iter(range(10**12))
    return lambda: send(queries[next(turn) % len(queries)], timeout=30)


def floors(served: ServedModel, n: int) -> dict[str, float]:
    """What reading the layer once takes in numpy: the output layer for a watcher's hidden
    layer, the unit embedding for a query vector."""
    rng = np.random.default_rng(0)
    liked = served.catalogue.movie_ids[rng.choice(served.num_movies, 20, replace=False)]
    hidden = served.hidden_one(0, [], liked.tolist(), 30.0, 1)[0]
    query = served.unit[0].copy()
    return {
        "Reconstruct top 10 (20 liked ids)": floor_seconds(
            lambda: hidden @ served.negated_output, n
        ),
        "NearestMovies by vector": floor_seconds(lambda: served.unit @ query, n),
    }


def bench_wait(
    table: Table, data: Path, log: Path, served: ServedModel, wait_us: int, n: int, seconds: float
) -> None:
    server = start_server(
        data,
        log,
        *("--batch-wait-us", str(wait_us), "--metrics-port", "0"),
    )
    wait_quiet(server.process.pid)
    port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", server.log_text())
    assert port, server.log_text()
    metrics = f"http://127.0.0.1:{port.group(1)}/metrics"
    bare = start_bare(False)
    try:
        floor_of = floors(served, n)
        for what, queries in requests(served, wait_us).items():
            method = what.split()[0]
            found = interleaved(
                {"bare": bare_call(bare.target), what: rotating(server.target, method, queries)},
                3,
                n // 3,
            )
            alone, base, floor = p(found[what], 50), p(found["bare"], 50), floor_of[what]
            table.add(
                f"{what}, 1 caller, wait {wait_us} µs",
                f"p50 {ms(alone)} (floor {ms(floor)}, bare {ms(base)})",
                f"{alone / (floor + base):.2f}x (floor + bare)",
                "≤ 1.3x",
            )
            one = throughput(lambda m=method, q=queries: rotating(server.target, m, q), 1, seconds)
            before = gathered(metrics, method)
            used = cpu_seconds(server.process.pid), time.process_time(), time.perf_counter()
            many = throughput(
                lambda m=method, q=queries: rotating(server.target, m, q), CALLERS, seconds
            )
            cpu = cpu_seconds(server.process.pid), time.process_time(), time.perf_counter()
            passes, rows = np.subtract(gathered(metrics, method), before)
            per_pass = f", {rows / passes:.1f} per pass" if passes else ""
            calls = many * (cpu[2] - used[2])
            table.add(
                f"{what}, {CALLERS} callers, wait {wait_us} µs",
                f"{many:,.0f} answered/s (1 caller: {one:,.0f}/s{per_pass}; CPU a call: server "
                f"{ms((cpu[0] - used[0]) / calls)}, callers {ms((cpu[1] - used[1]) / calls)}; "
                f"server {(cpu[0] - used[0]) / (cpu[2] - used[2]):.2f} cores)",
                f"{many / one:.2f}x 1 caller",
                "≥ 4x",
            )
    finally:
        bare.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits-us", default="0,500,1000,2000", help="--batch-wait-us values")
    parser.add_argument("--repeats", type=int, default=2, help="runs of everything (spread)")
    parser.add_argument("--quick", action="store_true", help="fewer calls, shorter runs")
    parser.add_argument(
        "--store",
        type=Path,
        help="serve this data dir's --model instead of a random one (e.g. a trained one's)",
    )
    parser.add_argument("--model", default="default", help="with --store (default: %(default)s)")
    args = parser.parse_args()
    n, seconds = (60, 3.0) if args.quick else (300, 8.0)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    table = Table()
    with tempfile.TemporaryDirectory() as tmp:
        data, log = args.store or Path(tmp) / "data", Path(tmp) / "server.log"
        if not args.store:
            save_random_model(data, BIG, BIG_MOVIES, 1, dim=200, hidden=600)
        store = Store(data)
        store.load_new()
        served = store.resolve(args.model if args.store else BIG, 0)
        for repeat in range(args.repeats):
            for wait in [int(w) for w in args.waits_us.split(",")]:
                print(f"run {repeat + 1}, wait {wait} µs", flush=True)
                bench_wait(
                    table, data, log.with_suffix(f".{repeat}.{wait}"), served, wait, n, seconds
                )
    hidden = served.input_to_hidden.shape[1] - 1
    print(
        f"Memory-floor benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, model {served.name} v{served.version}: {served.num_movies:,} "
        f"movies, embedding {served.embedding_dim}, hidden {hidden}, "
        f"Python {platform.python_version()}, grpcio {grpc.__version__}\n"
    )
    print(table.markdown())


if __name__ == "__main__":
    main()
