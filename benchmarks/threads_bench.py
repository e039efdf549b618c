"""Cheap queries with 8 callers against the server's handler threads: the defaults (gathering
on, 8 threads kept for gathered calls), gathering off, and gathering on with 3 threads.

    python benchmarks/threads_bench.py [--rounds 8] [--seconds 3]

One server per setting, each on its own copy of one store (the default model), and a bare
grpcio server, all started first; then, each round, every setting in turn: 8 callers of the
bare server for --seconds, then 8 callers of NearestMovies by id (k=10, answered from the
version's memo) on that setting's server. Measured in turns so that the machine's drift hits
every setting alike; prints each round's ratios and the median, low and high per setting.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings_server.serving.process import start_server, wait_quiet

# benchmarks/ is on sys.path when this runs as a script.
from serve_bench import bare_call, start_bare, stub_call, throughput  # isort: skip

CALLERS = 8
SETTINGS = {
    "defaults": [],
    "--batch-wait-us 0": ["--batch-wait-us", "0"],
    "--max-workers 3": ["--max-workers", "3"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="turns over every setting")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each sample")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first = start_server(work / "data", work / "first.log")  # trains the default model
        first.stop()
        servers = {}
        bare = None
        try:
            for i, (name, flags) in enumerate(SETTINGS.items()):
                shutil.copytree(work / "data", work / f"data{i}")
                servers[name] = start_server(work / f"data{i}", work / f"{i}.log", *flags)
            for server in servers.values():
                wait_quiet(server.process.pid)
            bare = start_bare(False)
            target = bare.target
            request = pb.NearestMoviesRequest(movie_id=3, k=10)
            ratios: dict[str, list[float]] = {name: [] for name in servers}
            for round_ in range(args.rounds):
                for name, server in servers.items():
                    base = throughput(lambda: bare_call(target), CALLERS, args.seconds)
                    call = functools.partial(stub_call, server.target, "NearestMovies", request)
                    ours = throughput(call, CALLERS, args.seconds)
                    ratios[name].append(ours / base)
                print(f"round {round_ + 1}:", {n: f"{r[-1]:.2f}x" for n, r in ratios.items()})
        finally:
            if bare:
                bare.stop()
            for server in servers.values():
                server.stop()
    print(f"\n{CALLERS} callers of NearestMovies by id, calls/s against a bare server's:\n")
    print("| setting | median | low | high |\n|---|---|---|---|")
    for name, found in ratios.items():
        print(
            f"| {name} | {statistics.median(found):.2f}x | {min(found):.2f}x | {max(found):.2f}x |"
        )


if __name__ == "__main__":
    main()
