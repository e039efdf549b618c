"""Neighbour lists of a dataset model by how often the query movie was liked: genre overlap of
the 10 nearest movies, with and without a minimum number of likes on the neighbours.

Imports a MovieLens directory through the CLI, trains the dataset defaults through a
`movie-embeddings serve` process (or measures a model of a running server: --target, --model),
then asks NearestMovies (cosine, k 10) for every movie with a genre, once per filter: none
(min_likes 0), the server's default, and each --min-likes. For each query: the share of its
neighbours sharing a genre with it, and the share liked fewer than 5 times; means by the query's
likes (among the training watchers). Random pairs of movies give the chance level. Prints
Markdown tables.

    python benchmarks/neighbours.py [--movielens DIR] [--seeds 1] [--min-likes 2 5 10 20]
    python benchmarks/neighbours.py --target 127.0.0.1:50051 --model ml-small

The default DIR is ../shared/data/ml-latest-small beside the project, when present.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import movie_embeddings as me
from movie_embeddings_server.serving.process import CLI, start_server

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
DATASET = "movielens"
K = 10
RARE = 5  # a neighbour liked fewer times than this counts as rarely liked
BUCKETS = ((1, 1), (2, 4), (5, 9), (10, 49), (50, None))  # the query's likes
CALLERS = 4  # concurrent NearestMovies calls
DEFAULT = None  # the filter left unset: the server's default


def bucket_name(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else str(low) if low == high else f"{low}-{high}"


def genre_overlap(
    client: me.Client, model: me.ModelRef, table: me.MovieVectors, min_likes: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each movie with a genre: the share of its K nearest movies (that have a genre)
    sharing one with it, the share of them liked fewer than RARE times, and how many came
    back; NaN where no neighbour has a genre."""
    genres = {int(m): set(g) for m, g in zip(table.movie_ids, table.genres, strict=True)}
    likes = dict(zip(table.movie_ids.tolist(), table.num_likes.tolist(), strict=True))
    queries = [m for m in table.movie_ids.tolist() if genres[m]]
    filters = {} if min_likes is DEFAULT else {"min_likes": min_likes}

    def measure(movie_id: int) -> tuple[float, float, int]:
        found = client.nearest_movies(movie_id, k=K, model=model, **filters)
        with_genre = [n.movie_id for n in found if genres[n.movie_id]]
        shared = [bool(genres[m] & genres[movie_id]) for m in with_genre]
        rare = [likes[n.movie_id] < RARE for n in found]
        return (
            float(np.mean(shared)) if shared else np.nan,
            float(np.mean(rare)) if rare else np.nan,
            len(found),
        )

    with ThreadPoolExecutor(CALLERS) as pool:
        measured = list(pool.map(measure, queries))
    overlap, rare, found = (np.array(column) for column in zip(*measured, strict=True))
    return overlap, rare, found


def random_overlap(table: me.MovieVectors, pairs: int = 200_000, seed: int = 0) -> float:
    """The share of random pairs of distinct movies with genres that share one: chance."""
    genres = [set(g) for g in table.genres]
    with_genre = np.flatnonzero([bool(g) for g in genres])
    rng = np.random.default_rng(seed)
    a, b = rng.choice(with_genre, pairs), rng.choice(with_genre, pairs)
    keep = a != b
    shared = [bool(genres[i] & genres[j]) for i, j in zip(a[keep], b[keep], strict=True)]
    return float(np.mean(shared))


def tables(client: me.Client, model: me.ModelRef, min_likes: list[int]) -> str:
    info = client.get_model(model)
    table = client.movie_table(model=model)
    likes = table.num_likes[[bool(g) for g in table.genres]]
    filters: list[int | None] = [0, DEFAULT, *min_likes]
    names = {0: "none", DEFAULT: "default"} | {m: f">= {m}" for m in min_likes}
    results = {f: genre_overlap(client, model, table, f) for f in filters}
    in_bucket = [
        (likes >= low) & (likes <= (high if high is not None else likes.max()))
        for low, high in BUCKETS
    ]
    header = "| neighbours' likes | " + " | ".join(
        f"query liked {bucket_name(*b)} ({int(np.sum(m)):,} movies)"
        for b, m in zip(BUCKETS, in_bucket, strict=True)
    )
    lines = [
        f"Model {info.name} v{info.version}: {info.num_movies:,} movies, "
        f"{info.num_train_watchers:,} training watchers; genre overlap of random pairs "
        f"{random_overlap(table):.3f}; the default floor: "
        f"{default_floor(table)} likes\n",
        header + " | all | neighbours liked < 5 times | answers short of 10 |",
        "|---" * (len(BUCKETS) + 4) + "|",
    ]
    for f in filters:
        overlap, rare, found = results[f]
        cells = [f"{np.nanmean(overlap[m]):.3f}" for m in in_bucket]
        lines.append(
            f"| {names[f]} | {' | '.join(cells)} | {np.nanmean(overlap):.3f} | "
            f"{np.nanmean(rare):.3f} | {int(np.sum(found < K))} |"
        )
    return "\n".join(lines)


def default_floor(table: me.MovieVectors) -> int:
    """The server's default minimum (model/filters.neighbour_min_likes), as the client sees it."""
    return min(10, -(-int(table.num_likes.max()) // 10))


@contextmanager
def trained_models(movielens: Path, seeds: list[int]) -> Iterator[tuple[me.Client, list[str]]]:
    """A server on a temporary store with the directory imported and one model per seed."""
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data", Path(tmp) / "server.log")
        try:
            subprocess.run(
                [*CLI, "import", str(movielens), "--name", DATASET, "--target", server.target],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            with me.Client(server.target) as client:
                names = []
                for seed in seeds:
                    *_, info = client.train(f"neighbours-{seed}", dataset=DATASET, seed=seed)
                    assert isinstance(info, me.ModelInfo)
                    names.append(info.name)
                    print(f"seed {seed} trained", file=sys.stderr, flush=True)
                yield client, names
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--movielens",
        type=Path,
        default=SHARED if SHARED.is_dir() else None,
        help=f"a MovieLens directory (default: {SHARED}, when present)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--min-likes", type=int, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--target", help="measure a running server's model instead")
    parser.add_argument("--model", help="with --target: the model to measure")
    args = parser.parse_args()
    if (args.target is None) != (args.model is None):
        parser.error("give --target and --model together")
    if args.target is None and args.movielens is None:
        parser.error("give --movielens DIR")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    load_before = os.getloadavg()[0]
    started = datetime.now(UTC)
    found = []
    if args.target:
        with me.Client(args.target) as client:
            found.append(tables(client, me.ModelRef(args.model), args.min_likes))
    else:
        with trained_models(args.movielens, args.seeds) as (client, names):
            found += [tables(client, me.ModelRef(name), args.min_likes) for name in names]
    source = args.model if args.target else args.movielens.name
    print(
        f"Neighbour lists, {source}, {started:%Y-%m-%d %H:%M} UTC, {platform.machine()} "
        f"{os.cpu_count()} cores, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}; "
        f"genre overlap of the {K} cosine-nearest movies, by the query's likes and the "
        "neighbours' minimum likes\n"
    )
    print("\n\n".join(found))


if __name__ == "__main__":
    main()
