"""Where the handler time of a query goes, and why a server thread pays more than a loop.

    python benchmarks/handler_cost.py [--calls 3000]

Saves a version of the default model's shape (80 movies, embedding 5, hidden 32, ids
0..79; random weights, as speed does not depend on them) and times its handlers in this
process, with no gRPC (a stand-in context keeps the trailing metadata): `thread_time` per
call, median over --calls calls, of the whole RPC method (wrapper included) and, for a
single-watcher Reconstruct (20 liked ids, top 10), of its two parts: the forward pass and
top-k (`ServedModel.reconstruct_one`) and building the answer. Each is timed

- back to back (a warm loop),
- after a 0.5 ms sleep before each call: the CPU idles between calls, as a server's does
  while the answer travels and the next request comes,
- after 0.5 ms of busy work in this thread before each call: the same gap, the CPU kept busy.

Then it serves the same store from a `movie-embeddings serve` process on 127.0.0.1 and reads
each query's `handler-cpu-us` (as benchmarks/serve_bench.py does). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings_server.config import Limits
from movie_embeddings_server.serving import servicer as serving
from movie_embeddings_server.serving.malloc import reuse_freed_memory
from movie_embeddings_server.serving.process import start_server, wait_quiet
from movie_embeddings_server.serving.rpc import HANDLER_CPU_ENV
from movie_embeddings_server.serving.trainer import Trainer
from movie_embeddings_server.store.datasets import DatasetStore
from movie_embeddings_server.store.models import Store

# benchmarks/ is on sys.path when this runs as a script.
from serve_bench import handler_us, queries, save_random_model  # isort: skip

GAP_SECONDS = 0.0005
RECONSTRUCT = "Reconstruct 1 watcher, 20 liked ids, top_k 10"


class Context:
    """What a handler asks of its gRPC context here: somewhere to put trailing metadata, and
    a callback at the call's end (a gathering servicer's; this one's never gathers)."""

    def set_trailing_metadata(self, metadata: object) -> None:
        self.trailing_metadata = metadata

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return True  # the call is live: the callback would run at its end


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


GAPS: dict[str, Callable[[float], None] | None] = {
    "warm loop": None,
    "after 0.5 ms idle": time.sleep,
    "after 0.5 ms busy": busy,
}


def median_us(call: Callable[[], object], gap: Callable[[float], None] | None, n: int) -> float:
    for _ in range(100):
        call()
    spent = []
    for _ in range(n):
        if gap:
            gap(GAP_SECONDS)
        start = time.thread_time_ns()
        call()
        spent.append(time.thread_time_ns() - start)
    return statistics.median(spent) / 1000


def in_process(data_dir: Path, requests: dict[str, Any]) -> dict[str, Callable[[], object]]:
    """The calls timed in this process: each query's RPC method (wrapper included), and a
    single-watcher Reconstruct's two parts."""
    store = Store(data_dir)
    store.load_new()
    servicer = serving.MovieEmbeddingServicer(
        store,
        Trainer(store),
        Limits(),
        server_id=f"host-{os.getpid()}",
        datasets=DatasetStore(data_dir),
        max_dataset_ratings=1,
    )
    served = store.resolve("default", 0)
    (watcher,) = requests[RECONSTRUCT].watchers

    def forward() -> tuple[np.ndarray, np.ndarray]:
        return served.reconstruct_one(
            watcher.ratings, watcher.liked_movie_ids, watcher.age_years, watcher.education, 10
        )

    probabilities, chosen = forward()

    def answer() -> None:
        response = pb.ReconstructResponse(model=serving.ref_of(served))
        serving._add_reconstruction(response, served.catalogue, probabilities, chosen)

    calls: dict[str, Callable[[], object]] = {
        f"{what}: whole handler": functools.partial(
            getattr(servicer, what.split()[0]), request, Context()
        )
        for what, request in requests.items()
    }
    calls["Reconstruct: forward pass and top-k (reconstruct_one)"] = forward
    calls["Reconstruct: building the answer"] = answer
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per figure")
    args = parser.parse_args()
    reuse_freed_memory()  # as the server does
    ids = np.random.default_rng(3).choice(80, 60, replace=False).tolist()
    requests = {
        what: calls[0]
        for what, calls in queries(pb.ModelRef(), ids, ids[40:]).items()
        if "new movie" not in what
    }
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        save_random_model(data_dir, "default", 80, 1, dim=5, hidden=32, movielens_ids=False)
        found = {
            what: [median_us(call, gap, args.calls) for gap in GAPS.values()]
            for what, call in in_process(data_dir, requests).items()
        }
        os.environ[HANDLER_CPU_ENV] = "1"
        server = start_server(data_dir, Path(tmp) / "server.log")
        wait_quiet(server.process.pid)
        try:
            for what, request in requests.items():
                found[f"{what}: whole handler"].append(
                    handler_us(server.target, what.split()[0], [request], args.calls)
                )
        finally:
            server.stop()

    print(
        f"Handler cost, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, 80 movies, median thread_time "
        f"per call over {args.calls} calls\n"
    )
    print(f"| what | {' | '.join(GAPS)} | in a server thread (handler-cpu-us) |")
    print("|---|" + "---|" * (len(GAPS) + 1))
    for what, figures in found.items():
        cells = [f"{f:.1f} µs" for f in figures] + [""] * (len(GAPS) + 1 - len(figures))
        print(f"| {what} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
