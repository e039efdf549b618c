"""Parsing a MovieLens ratings.csv into numpy columns: pyarrow's CSV readers against pandas.

    python benchmarks/parse_bench.py DIR_OR_RATINGS_CSV [--repeats 2] [--block-mib 4]

Reads the file (e.g. one made by benchmarks/make_movielens_like.py) with each reader into the
columns an import sends (userId int64, movieId int32, rating float32, timestamp int64), each
run in a fresh process so its peak RSS (VmHWM) is its own; the file is read once first so
every reader finds it in the page cache. Prints a Markdown table: best seconds, rows/s, peak
RSS and the RSS before parsing, and the ratio to the fastest. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

TYPES = {"userId": "int64", "movieId": "int32", "rating": "float32", "timestamp": "int64"}
READERS = {
    "pyarrow.csv.read_csv": "arrow",
    "pyarrow.csv.read_csv, use_threads=False": "arrow-1",
    "pyarrow.csv.open_csv (streaming, batches dropped)": "arrow-stream",
    "pandas.read_csv, engine c": "pandas-c",
    "pandas.read_csv, engine pyarrow": "pandas-arrow",
}


def vm_mib(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def with_arrow(path: Path | io.BytesIO, threads: bool) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=threads),
        convert_options=pacsv.ConvertOptions(
            column_types={k: pa.type_for_alias(v) for k, v in TYPES.items()}
        ),
    )
    return {name: table.column(name).to_numpy() for name in TYPES}


def arrow_stream(path: Path | io.BytesIO, block_mib: int) -> dict[str, np.ndarray]:
    """Batch by batch, as an importer that sends each batch on would; keeps only a checksum."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=block_mib << 20),
        convert_options=pacsv.ConvertOptions(
            column_types={k: pa.type_for_alias(v) for k, v in TYPES.items()}
        ),
    )
    rows, total = 0, 0.0
    for batch in reader:
        columns = {name: batch.column(name).to_numpy() for name in TYPES}
        rows += len(columns["rating"])
        total += float(columns["rating"].sum(dtype=np.float64))
    return {"rating": np.array([total]), "rows": np.array([rows])}


def with_pandas(path: Path | io.BytesIO, engine: str) -> dict[str, np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(path, engine=engine, dtype=TYPES)  # type: ignore[call-overload]
    return {name: frame[name].to_numpy() for name in TYPES}


def parse(reader: str, source: Path | io.BytesIO, block_mib: int) -> tuple[int, float]:
    """Rows and the sum of the ratings, as `reader` parses them."""
    if reader == "arrow-stream":
        columns = arrow_stream(source, block_mib)
        return int(columns["rows"][0]), float(columns["rating"][0])
    if reader in ("arrow", "arrow-1"):
        columns = with_arrow(source, threads=reader == "arrow")
    else:
        columns = with_pandas(source, "c" if reader == "pandas-c" else "pyarrow")
    return len(columns["rating"]), float(columns["rating"].sum(dtype=np.float64))


def run_one(reader: str, path: Path, block_mib: int) -> None:
    """In a child process: import, warm up on the file's head, parse, print figures as JSON."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    parse(reader, io.BytesIO(head[: head.rindex(b"\n") + 1]), block_mib)  # first-use costs
    before = vm_mib("VmRSS")
    start = time.perf_counter()
    rows, total = parse(reader, path, block_mib)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": rows,
                "checksum": total,
                "peak_mib": vm_mib("VmHWM"),
                "before_mib": before,
            }
        )
    )


def measure(reader: str, path: Path, block_mib: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, str(path), "--one", reader, "--block-mib", str(block_mib)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a ratings.csv or the directory holding it")
    parser.add_argument("--repeats", type=int, default=2, help="runs per reader; the best counts")
    parser.add_argument(
        "--block-mib", type=int, default=4, help="the streaming reader's block size"
    )
    parser.add_argument("--one", choices=sorted(READERS.values()), help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = args.path / "ratings.csv" if args.path.is_dir() else args.path
    if args.one:
        run_one(args.one, path, args.block_mib)
        return
    with open(path, "rb") as f:  # into the page cache, so no reader pays for the disk
        while f.read(64 << 20):
            pass
    found: dict[str, list[dict]] = {label: [] for label in READERS}
    for _ in range(args.repeats):  # in turns, so machine noise hits every reader alike
        for label, reader in READERS.items():
            found[label].append(measure(reader, path, args.block_mib))
            print(f"  {label}: {found[label][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    checks = {(r["rows"], round(r["checksum"], 1)) for runs in found.values() for r in runs}
    if len(checks) != 1:
        raise SystemExit(f"the readers disagree: {checks}")
    rows = next(iter(checks))[0]
    best = {label: min(r["seconds"] for r in runs) for label, runs in found.items()}
    fastest = min(best.values())
    size_mib = path.stat().st_size / 2**20
    print(
        f"Parsing {path} ({rows:,} rows, {size_mib:,.0f} MiB), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, pyarrow {version('pyarrow')}, "
        f"pandas {version('pandas')}, best of {args.repeats}\n"
    )
    print("| reader | seconds | rows/s | peak RSS | RSS before parsing | ratio to fastest |")
    print("|---|---|---|---|---|---|")
    for label, runs in found.items():
        peak = max(r["peak_mib"] for r in runs)
        before = min(r["before_mib"] for r in runs)
        print(
            f"| {label} | {best[label]:.1f} | {rows / best[label]:,.0f} | {peak:,.0f} MiB | "
            f"{before:,.0f} MiB | {best[label] / fastest:.2f}x |"
        )


if __name__ == "__main__":
    main()
