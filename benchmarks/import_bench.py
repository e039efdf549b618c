"""Import memory and time: a real `movie-embeddings serve` process, the CLI's `import`.

    python benchmarks/import_bench.py [--sizes 100000 1000000 25000000] [--repeats 2]
        [--work DIR] [--shuffled]

For each size, a MovieLens-25M-shaped directory of that many ratings is made once under
--work by benchmarks/make_movielens_like.py (watchers in proportion, movies by the square
root, so each watcher's share of the catalogue stays ML-25M's; 25,000,095 ratings is ML-25M's
own shape); --shuffled imports a copy of ratings.csv in random row order (the worst case for
grouping by watcher). Each run starts a fresh server on a store holding only the `default`
model (trained once), resets the server's peak resident memory (/proc/PID/clear_refs 5),
runs `movie-embeddings import DIR --name bench` as a user would, and reads the server's
VmHWM: its growth is the peak minus the resident memory before the import. Prints a Markdown
table: the growth in MiB and in bytes per rating, the import's wall seconds (the CLI reading
the files and sending them, the server validating, building and storing) and the server's
CPU seconds meanwhile (what a busy machine slows down). Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from movie_embeddings_server.serving.process import CLI, reset_peak_rss, rss_mb, start_server

HERE = Path(__file__).resolve().parent
ML25M_RATINGS, ML25M_WATCHERS, ML25M_MOVIES = 25_000_095, 162_541, 59_047


def movielens_like(work: Path, ratings: int, shuffled: bool) -> Path:
    """The directory of `ratings` ratings, made on first use."""
    share = ratings / ML25M_RATINGS
    out = work / f"ml-{ratings}"
    if not (out / "generated.json").exists():
        subprocess.run(
            [
                sys.executable,
                str(HERE / "make_movielens_like.py"),
                "--out",
                str(out),
                "--ratings",
                str(ratings),
                "--watchers",
                str(max(1, round(ML25M_WATCHERS * share))),
                "--movies",
                str(min(ML25M_MOVIES, max(100, round(ML25M_MOVIES * share**0.5)))),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if not shuffled:
        return out
    mixed = work / f"ml-{ratings}-shuffled"
    if not (mixed / "ratings.csv").exists():
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(out / "ratings.csv")
        order = np.random.default_rng(0).permutation(table.num_rows)
        mixed.mkdir(exist_ok=True)
        shutil.copy(out / "movies.csv", mixed / "movies.csv")
        pacsv.write_csv(table.take(order), mixed / "ratings.csv.part")
        os.replace(mixed / "ratings.csv.part", mixed / "ratings.csv")
    return mixed


def template_store(work: Path) -> Path:
    """A store holding only the `default` model, so that no server here trains one."""
    data = work / "store"
    if not (data / "default").is_dir():
        server = start_server(data, work / "template.log")
        server.stop()
    return data


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(store: Path, directory: Path, tmp: Path) -> tuple[float, float, float, float]:
    """(resident MiB before, peak growth MiB, import seconds, server CPU seconds) of one
    fresh server."""
    data = tmp / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(store / "default", data / "default")
    server = start_server(data, tmp / "server.log")
    try:
        time.sleep(1.0)  # past the start's last allocations
        before = reset_peak_rss(server.process.pid)
        cpu = cpu_seconds(server.process.pid)
        started = time.perf_counter()
        subprocess.run(
            [*CLI, "import", str(directory), "--name", "bench", "--target", server.target],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        peak = rss_mb(server.process.pid, "VmHWM")
        cpu = cpu_seconds(server.process.pid) - cpu
    finally:
        server.stop()
    return before, peak - before, seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, ML25M_RATINGS])
    parser.add_argument("--repeats", type=int, default=2, help="runs per size (default: 2)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "import-bench",
        help="where the generated directories and the template store are kept",
    )
    parser.add_argument("--shuffled", action="store_true", help="ratings in random row order")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    store = template_store(args.work)
    rows = []
    for size in args.sizes:
        directory = movielens_like(args.work, size, args.shuffled)
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(dir=args.work) as tmp:
                before, growth, seconds, cpu = run(store, directory, Path(tmp))
            rows.append((size, before, growth, seconds, cpu))
            print(f"  {size:,} ratings: +{growth:,.0f} MiB, {seconds:.1f} s", file=sys.stderr)
    print(
        "| ratings | server RSS before | peak growth | bytes / rating | import seconds | "
        "server CPU seconds |\n|---|---|---|---|---|---|"
    )
    for size, before, growth, seconds, cpu in rows:
        print(
            f"| {size:,} | {before:,.0f} MiB | {growth:,.0f} MiB | "
            f"{growth * 2**20 / size:.1f} | {seconds:.1f} | {cpu:.2f} |"
        )
    load = os.getloadavg()
    print(
        f"\n({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} "
        f"cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; "
        f"{'shuffled' if args.shuffled else 'sorted by userId as MovieLens writes them'})"
    )


if __name__ == "__main__":
    main()
