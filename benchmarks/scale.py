"""A dataset through a real server at scale: import seconds, memory, epoch time, query latency.

    python benchmarks/scale.py [--movielens DIR] [--epochs N] [--work-dir DIR]

Without --movielens, uses (making it first if missing) a synthetic directory with
MovieLens-25M's shape (benchmarks/make_movielens_like.py) in --generated-dir. Starts a
`movie-embeddings serve` process, then: imports DIR with `movie-embeddings import` as a user
would (wall seconds, the server's peak RSS, the dataset's size on disk); trains a model on it
through the server at the dataset default config (seconds per epoch from the progress events,
the trainer process's peak RSS, the server's RSS with the model loaded, and again in a server
restarted on the store); and measures NearestMovies and Reconstruct on that model against a
bare grpcio call (benchmarks/bare_server.py), interleaved. An epoch running longer than
--max-epoch-seconds is cancelled, its length extrapolated from the steps done, and a model
of about the same catalogue trained on the heaviest watchers for the queries. Prints a
Markdown table with the targets beside the figures; nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from make_movielens_like import ML25M, generate
from real_quality import FIGURES, prepared_rows, references
from serve_bench import Table, bare_call, interleaved, ms, p, start_bare, stub_call

import movie_embeddings as me
from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings_server import config
from movie_embeddings_server.serving.process import (
    CLI,
    ServerProcess,
    child_pids,
    rss_mb,
    start_server,
)

NAME = "scale"  # of the dataset and of the model


def status_mib(pid: int, field: str) -> float:
    """A memory figure of a process (VmRSS, VmHWM) from /proc, MiB; 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    found = re.search(rf"{field}:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else 0.0


def reset_peak(pid: int) -> bool:
    """Start VmHWM over from the current RSS (Linux's clear_refs "5"); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextmanager
def peaks(server: ServerProcess, every: float = 0.2) -> Iterator[dict[int, float]]:
    """Peak VmHWM of the server and of each of its children (the trainer process) while the
    block runs, by pid; sampled on a thread, since a child's figures go when it exits."""
    found: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        root = server.process.pid
        for pid in [root, *child_pids(root)]:
            found[pid] = max(found.get(pid, 0.0), status_mib(pid, "VmHWM"))

    def loop() -> None:
        while not stop.wait(every):
            sample()

    sample()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join()
        sample()


def fresh_peaks(server: ServerProcess) -> str:
    """Reset the peaks of the server and its children; a note for the table if refused."""
    ok = all(reset_peak(pid) for pid in [server.process.pid, *child_pids(server.process.pid)])
    return "" if ok else " (peak since the process started: clear_refs refused)"


def movielens_dir(args: argparse.Namespace) -> Path:
    """--movielens, or the ML-25M-shaped directory, made if missing or of another shape."""
    if args.movielens:
        return Path(args.movielens)
    out = args.generated_dir
    manifest = out / "generated.json"
    if not manifest.exists() or json.loads(manifest.read_text()) != asdict(ML25M):
        print(f"making an ML-25M-shaped dataset in {out} (minutes)", file=sys.stderr, flush=True)
        generate(ML25M, out)
    return out


@dataclass
class Imported:
    info: dict
    seconds: float
    read_seconds: float | None  # reading the files, as the CLI reports it
    client_peak_mib: float


def run_import(server: ServerProcess, directory: Path, work: Path) -> Imported:
    """`movie-embeddings import` in a child process: wall seconds, its peak RSS, the info."""
    out, err = work / "import.out", work / "import.err"
    command = [*CLI, "import", str(directory), "--name", NAME, "--target", server.target]
    print("$ " + " ".join([*command, "--json"]), file=sys.stderr, flush=True)
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen([*command, "--json"], stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # its rusage: ru_maxrss, KiB on Linux
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"import failed ({process.returncode}):\n{err.read_text()}")
    said = re.search(r"read [\d,]+ ratings.* in ([\d.]+) s", err.read_text())
    return Imported(
        json.loads(out.read_text()),
        seconds,
        float(said.group(1)) if said else None,
        usage.ru_maxrss / 1024,
    )


def du_mib(path: Path) -> float:
    """Disk space a directory takes (du), MiB."""
    used = subprocess.run(["du", "-sB1", str(path)], capture_output=True, text=True, check=True)
    return int(used.stdout.split()[0]) / 2**20


@dataclass
class Trained:
    info: me.ModelInfo | None  # None when stopped
    events: list[me.TrainProgress]
    wall_seconds: float
    prepare_seconds: float  # from the call to the first step: load, rows, model


def train(
    server: ServerProcess, model: str, settings: dict, max_epoch_seconds: float = float("inf")
) -> Trained:
    """Train `model` on dataset NAME through the SDK at the dataset defaults but `settings`;
    cancelled when an epoch runs longer than `max_epoch_seconds`."""
    events: list[me.TrainProgress] = []
    info = None
    epoch_start, shown, prepare = 0.0, 0.0, None
    with me.Client(server.target) as client:
        start = time.perf_counter()
        stream = client.train(model, dataset=me.DatasetRef(NAME), **settings)
        for event in stream:
            if not isinstance(event, me.TrainProgress):
                info = event
                continue
            if prepare is None:  # the events count from the first step
                prepare = time.perf_counter() - start - event.elapsed_seconds
            events.append(event)
            ended = event.step >= event.steps
            if ended or event.elapsed_seconds - shown >= 30:
                shown = event.elapsed_seconds
                print(
                    f"  epoch {event.epoch}/{event.epochs} step {event.step:,}/{event.steps:,} "
                    f"loss {event.loss:.4f} at {event.elapsed_seconds:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
            if ended:
                epoch_start = event.elapsed_seconds
            elif event.elapsed_seconds - epoch_start > max_epoch_seconds:
                print("  epoch too long: cancelling", file=sys.stderr, flush=True)
                stream.close()  # cancels the Train
                break
        wall = time.perf_counter() - start
    return Trained(info, events, wall, wall if prepare is None else prepare)


def epoch_figures(events: list[me.TrainProgress]) -> tuple[list[float], float]:
    """Seconds of each finished epoch, and steps per second over the run."""
    ends = [e.elapsed_seconds for e in events if e.step >= e.steps]
    durations = [b - a for a, b in zip([0.0, *ends], ends, strict=False)]
    last = events[-1]
    steps_done = (last.epoch - 1) * last.steps + last.step
    return durations, steps_done / last.elapsed_seconds


def bench_import(table: Table, server: ServerProcess, directory: Path, work: Path) -> None:
    note = fresh_peaks(server)
    with peaks(server) as found:
        imported = run_import(server, directory, work)
    info = imported.info
    table.add(
        "dataset",
        f"{info['num_ratings']:,} ratings by {info['num_watchers']:,} watchers of "
        f"{info['num_movies']:,} movies ({info['num_titled_movies']:,} titled); "
        f"ratings.csv {(directory / 'ratings.csv').stat().st_size / 2**20:,.0f} MiB",
    )
    read = (
        ""
        if imported.read_seconds is None
        else f" (reading the files {imported.read_seconds:.1f} s)"
    )
    table.add(
        "`movie-embeddings import`: parse + upload, wall",
        f"{imported.seconds:.1f} s{read}; {info['num_ratings'] / imported.seconds:,.0f} ratings/s",
        "",
        "≤ 90 s (ML-25M)",
    )
    table.add("import: the CLI process's peak RSS", f"{imported.client_peak_mib:,.0f} MiB")
    table.add("import: the server's peak RSS" + note, f"{found[server.process.pid]:,.0f} MiB")
    table.add(
        "dataset on disk (`du` of datasets/NAME)",
        f"{du_mib(server.data_dir / 'datasets' / NAME):,.1f} MiB "
        f"({info['size_bytes'] / 2**20:,.1f} MiB by DatasetInfo.size_bytes)",
    )


def bench_train(
    table: Table, server: ServerProcess, args: argparse.Namespace
) -> me.ModelInfo | None:
    note = fresh_peaks(server)
    settings = {"seed": args.seed} | ({"epochs": args.epochs} if args.epochs else {})
    with peaks(server) as found:
        trained = train(server, NAME, settings, args.max_epoch_seconds)
    if not trained.events:
        raise RuntimeError(f"the Train stream ended with no progress:\n{server.log_text()[-3000:]}")
    durations, rate = epoch_figures(trained.events)
    last = trained.events[-1]
    batch = (
        trained.info.training.batch_size
        if trained.info
        else config.resolve_training({}, source="dataset").batch_size
    )
    per_second = f"{rate:.1f} steps/s = {rate * batch:,.0f} watchers/s"
    if trained.info is None:
        table.add(
            f"seconds per epoch: STOPPED after {last.elapsed_seconds:.0f} s in epoch "
            f"{last.epoch}, step {last.step:,}/{last.steps:,}",
            f"≈ {last.steps / rate:,.0f} s per epoch extrapolated ({per_second})",
        )
    else:
        info = trained.info
        rest = (
            f"; later epochs median {statistics.median(durations[1:]):.2f} s"
            if len(durations) > 1
            else ""
        )
        table.add(
            f"seconds per epoch, dataset defaults ({info.training.epochs} epochs at most, "
            f"batch {batch}, embedding {info.embedding_dim}, hidden {info.training.hidden_units})",
            f"epoch 1 {durations[0]:.2f} s{rest}; {last.steps:,} steps an epoch, {per_second}; "
            f"{len(durations)} epochs run",
        )
        table.add(
            "the whole Train, early stopping included (call to answer, wall)",
            f"{trained.wall_seconds:,.0f} s; best epoch {info.metrics.get('best_epoch', 0):.0f}"
            f" of {len(durations)}",
            "",
            "≤ 30 min (ML-25M)",
        )
        table.add(
            "training kept",
            f"{info.num_train_watchers:,} training + {info.num_heldout_watchers:,} held-out "
            f"watchers, {info.num_movies:,} movies",
        )
    table.add(
        "Train: call to first step (load the dataset, make rows, build the model)",
        f"{trained.prepare_seconds:.1f} s (whole call {trained.wall_seconds:.1f} s)",
    )
    trainers = [pid for pid in found if pid != server.process.pid]
    table.add(
        "trainer process peak RSS (VmHWM)" + note,
        f"{max((found[pid] for pid in trainers), default=0.0):,.0f} MiB",
        "",
        "≤ 4 GiB",
    )
    table.add("server peak RSS during the Train" + note, f"{found[server.process.pid]:,.0f} MiB")
    return trained.info


def bench_quality(table: Table, server: ServerProcess, info: me.ModelInfo, seed: int) -> None:
    """The model's figures on its held-out watchers beside popularity and implicit's ALS
    (tuned on a validation split), as benchmarks/real_quality.py measures them; EASE only
    where its inverse fits (real_quality.EASE_MAX_SIDE)."""
    print("popularity and ALS on the held-out watchers", file=sys.stderr, flush=True)
    found = references(prepared_rows(server.data_dir, info), seed)
    ours = {f: info.metrics[f] for f in FIGURES}
    for row in found:
        ratio = " / ".join(f"{ours[f] / row.figures[f]:.2f}x" for f in FIGURES)
        fit = "" if row.seconds is None else f", fitted in {row.seconds:,.0f} s"
        table.add(
            f"held-out Recall@20 / Recall@50 / NDCG@100: {row.method}",
            " / ".join(f"{row.figures[f]:.3f}" for f in FIGURES) + fit,
            f"ours {ratio}",
            "ours ≥ ALS" if row.method.startswith("ALS") else "",
        )
    table.add(
        "held-out Recall@20 / Recall@50 / NDCG@100: ours (dataset defaults)",
        " / ".join(f"{ours[f]:.3f}" for f in FIGURES),
    )


def query_model(table: Table, server: ServerProcess) -> me.ModelInfo:
    """A model of about the same catalogue for the queries when the full Train was stopped:
    one epoch on the heaviest watchers only (on the ML-25M-shaped data, 150 likes keep a
    tenth of the watchers and 97 % of the movies; a large held-out share instead would make
    the held-out evaluation after the fit as long as the epoch)."""
    heavy = {"epochs": 1, "min_likes_per_watcher": 150, "seed": 1}
    start = time.monotonic()
    while True:
        try:
            trained = train(server, f"{NAME}-heavy", heavy)
            break
        except me.ResourceExhausted:  # the stopped Train's slot frees once its trainer stops
            if time.monotonic() - start > 120:
                raise
            time.sleep(0.5)
    assert trained.info is not None
    refused = time.monotonic() - start - trained.wall_seconds
    table.add(
        "model for the queries (the full Train stopped): 1 epoch on the watchers with at "
        "least 150 likes",
        f"{trained.info.num_train_watchers:,} training watchers, {trained.info.num_movies:,} "
        f"movies, trained in {trained.wall_seconds:.0f} s "
        f"(refused RESOURCE_EXHAUSTED for {refused:.1f} s after the cancel)",
    )
    return trained.info


def loaded(server: ServerProcess, info: me.ModelInfo) -> list[int]:
    """Query the model once (so it is loaded) and give 21 ids of its catalogue: the most
    probable movies for a watcher who liked nothing."""
    with me.Client(server.target) as client:
        popular = client.reconstruct([], age_years=30, education=1, top_k=21, model=info.ref)
        ids = [r.movie_id for r in popular.recommendations]
        client.nearest_movies(ids[0], k=10, model=info.ref)
    return ids


def bench_queries(
    table: Table, server: ServerProcess, info: me.ModelInfo, rounds: int, n: int
) -> None:
    ref = pb.ModelRef(name=info.ref.name, version=info.ref.version)
    ids = loaded(server, info)
    table.add(
        f"server RSS with the model loaded ({info.num_movies:,} movies), the same process "
        "after the import and the Train",
        f"{rss_mb(server.process.pid):,.0f} MiB",
        "",
        "≤ 1 GiB",
    )
    watcher = pb.Watcher(liked_movie_ids=ids[1:21], age_years=30, education=1)
    nearest = pb.NearestMoviesRequest(model=ref, movie_id=ids[0], k=10)
    reconstruct = pb.ReconstructRequest(
        model=ref, watchers=[watcher], top_k=10, recommendations_only=True
    )
    bare = start_bare(False)
    try:
        found = interleaved(
            {
                "bare": bare_call(bare.target),
                "nearest": stub_call(server.target, "NearestMovies", nearest),
                "reconstruct": stub_call(server.target, "Reconstruct", reconstruct),
            },
            rounds,
            n,
        )
        size = stub_call(server.target, "Reconstruct", reconstruct)().ByteSize()  # type: ignore[attr-defined]
    finally:
        bare.stop()
    base50, base99 = p(found["bare"], 50), p(found["bare"], 99)
    table.add(f"bare grpcio unary ({rounds * n:,} calls)", f"p50 {ms(base50)}, p99 {ms(base99)}")
    for key, what, target in (
        ("nearest", f"NearestMovies by id, k=10, {info.num_movies:,} movies", "≤ 1.5x"),
        (
            "reconstruct",
            f"Reconstruct, 20 liked ids, top_k 10 ({size:,} B response)",
            "≤ 1.3x (floor + bare): benchmarks/floor_bench.py",
        ),
    ):
        values = found[key]
        table.add(
            what,
            f"p50 {ms(p(values, 50))}, p99 {ms(p(values, 99))}",
            f"{p(values, 50) / base50:.2f}x bare p50, {p(values, 99) / base99:.2f}x bare p99",
            target,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--movielens",
        type=Path,
        help="a MovieLens latest/25M-format directory (default: the ML-25M-shaped one)",
    )
    parser.add_argument(
        "--generated-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "bench_ml" / "ml25",
        help="where the ML-25M-shaped directory is, or is made (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="epochs to train at most (default: the dataset default's, early stopping on)",
    )
    parser.add_argument(
        "--max-epoch-seconds",
        type=float,
        default=1200.0,
        help="cancel the Train when an epoch runs longer (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="of the training (default: 1)")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds (default: 5)")
    parser.add_argument("--calls", type=int, default=200, help="calls a round (default: 200)")
    parser.add_argument(
        "--max-message-bytes", type=int, help="the server's (default: the server's default)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep the server's data dir and logs here (default: a temporary directory)",
    )
    parser.add_argument(
        "--no-references",
        action="store_true",
        help="skip popularity and ALS on the model's held-out watchers (ALS's tuning takes "
        "~20 min at ML-25M's shape)",
    )
    args = parser.parse_args()
    directory = movielens_dir(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    flags = ["--max-dataset-ratings", "100000000"]
    if args.max_message_bytes:
        flags += ["--max-message-bytes", str(args.max_message_bytes)]
    load = os.getloadavg()
    table = Table()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        server = start_server(work / "data", work / "server.log", *flags)
        try:
            bench_import(table, server, directory, work)
            trained = bench_train(table, server, args)
            if trained and not args.no_references:
                bench_quality(table, server, trained, args.seed)
            info = trained or query_model(table, server)
            bench_queries(table, server, info, args.rounds, args.calls)
        finally:
            server.stop()
        server = start_server(work / "data", work / "server.log", *flags)
        try:
            loaded(server, info)
            table.add(
                "the server restarted on that store: RSS with the model loaded",
                f"{rss_mb(server.process.pid):,.0f} MiB",
                "",
                "≤ 1 GiB",
            )
        finally:
            server.stop()
    print(
        f"Scale benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores (load average {load[0]:.1f} at the start), Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}; {directory}\n"
    )
    print(table.markdown())


if __name__ == "__main__":
    main()
