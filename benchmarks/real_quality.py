"""Recommendations on real ratings: ours against popularity, EASE and ALS on the same splits.

Imports a MovieLens directory through the CLI (`movie-embeddings import`), then, for each seed,
trains two models through a `movie-embeddings serve` process on it — the dataset defaults and
the notebook preset — and measures every method on the held-out watchers of the default
model's version (its heldout.npz), with the same fold-in the server measured its model with
(DESIGN.md §6: likes are ratings >= 4, 20 % of the watchers held out, 80 % of each one's likes
folded in, the other 20 % to find). EASE (Steck 2019) and implicit's ALS are tuned on a
10 % validation split of the training watchers (the one the server's early stopping would
use) and refitted on all of them, as ours trains on all of them; they exist here only.
Prints a Markdown table per seed and the mean.

    python benchmarks/real_quality.py [--movielens DIR] [--seeds 1 2 3] [--no-notebook]

The default DIR is ../shared/data/ml-latest-small beside the project, when present.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse

import movie_embeddings as me
from movie_embeddings_server import config
from movie_embeddings_server.serving.process import CLI, start_server
from movie_embeddings_server.store.datasets import DatasetStore
from movie_embeddings_server.training import ranking, rows
from movie_embeddings_server.training.worker import HELDOUT

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
DATASET = "movielens"
HOLDOUT = 0.2  # of the watchers (Liang et al. 2018 hold out 10-20 %; DESIGN.md §6 says 20 %)
VALIDATION = 0.1  # of the training watchers, to tune EASE and ALS
EASE_LAMBDAS = (25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
EASE_MAX_SIDE = 20_000  # EASE inverts a min(watchers, movies)-square matrix
ALS_GRID = [
    (factors, regularization, alpha)
    for factors in (32, 64, 128)
    for regularization in (0.01, 0.1, 1.0)
    for alpha in (1.0, 5.0, 20.0)
]
# Above ALS_FULL_GRID_LIKES training likes a fit takes minutes (ML-25M's shape: ~4 min at 64
# factors, ~13 min at 128 on 2 cores), so only the settings that did best on the smaller sets
# and on a first ML-25M-shaped run are tried.
ALS_FULL_GRID_LIKES = 2_000_000
ALS_LARGE_GRID = [(64, 1.0, 5.0), (64, 1.0, 20.0), (128, 1.0, 20.0)]
TARGET_EASE = 0.95  # our mean Recall@20 and NDCG@100 over EASE's
TARGET_POPULARITY = 1.5  # ours over popularity on every seed
TARGET_SECONDS = 60.0  # Train RPC wall time
FIGURES = ("recall_at_20", "recall_at_50", "ndcg_at_100")
OURS = "ours, dataset defaults"


@dataclass
class Row:
    method: str
    figures: dict[str, float]
    seconds: float | None  # fit (ours: the Train RPC's wall time); None: nothing to fit


def dense(likes: rows.Likes) -> np.ndarray:
    return likes.dense(np.arange(len(likes))).astype(np.float64)


def sparse(likes: rows.Likes) -> scipy.sparse.csr_matrix:
    """The 0/1 watchers x movies matrix of `likes`, without a dense copy (ALS's input)."""
    ones = np.ones(len(likes.columns), dtype=np.float32)
    return scipy.sparse.csr_matrix(
        (ones, likes.columns, likes.indptr), shape=(len(likes), likes.num_columns)
    )


def ease(train: rows.Likes, lam: float) -> Callable[[np.ndarray], np.ndarray]:
    """EASE's scores of folded-in rows F: F B with B = I - P / diag(P), P = (X'X + lam I)^-1
    (diag(B) = 0). With fewer watchers than movies P is applied through the watchers x
    watchers matrix (Woodbury), so no movies x movies matrix is made."""
    x = dense(train)
    if len(x) < x.shape[1]:
        k = x @ x.T
        k[np.diag_indices_from(k)] += lam
        kx = scipy.linalg.solve(k, x, assume_a="pos")
        diag = (1 - (x * kx).sum(axis=0)) / lam

        def times_p(f: np.ndarray) -> np.ndarray:
            return (f - (f @ x.T) @ kx) / lam
    else:
        g = x.T @ x
        g[np.diag_indices_from(g)] += lam
        p = scipy.linalg.inv(g, assume_a="pos")
        diag = np.diag(p).copy()

        def times_p(f: np.ndarray) -> np.ndarray:
            return f @ p

    return lambda f: f - times_p(f) / diag


def ease_recommender(score: Callable[[np.ndarray], np.ndarray]) -> ranking.Recommender:
    return ranking.by_scores(lambda _, folded: score(folded.astype(np.float64)))


def als_recommender(model: Any) -> ranking.Recommender:
    """implicit's ALS, each watcher's factors solved from its folded-in likes."""

    def recommend(_: np.ndarray, folded: np.ndarray) -> list[np.ndarray]:
        items = scipy.sparse.csr_matrix(folded, dtype=np.float32)
        ids, _ = model.recommend(
            np.arange(len(folded)),
            items,
            N=ranking.DEPTH,
            filter_already_liked_items=True,
            recalculate_user=True,
        )
        return [r[r >= 0] for r in ids]

    return recommend


def fit_als(train: rows.Likes, factors: int, regularization: float, alpha: float, seed: int) -> Any:
    from implicit.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=factors,
        regularization=regularization,
        alpha=alpha,
        iterations=15,
        random_state=seed,
    )
    model.fit(sparse(train), show_progress=False)
    return model


def validation_ndcg(recommender: ranking.Recommender, validation: rows.Likes, seed: int) -> float:
    folded, held = validation.fold_in(ranking.HELD_SHARE, seed)
    return ranking.measure(recommender, folded, held)["ndcg_at_100"]


def references(prepared: rows.Rows, seed: int) -> list[Row]:
    """Popularity, EASE and ALS on the held-out watchers, each tuned on the validation split."""
    folded, held = prepared.heldout.fold_in(ranking.HELD_SHARE, seed)
    fitted, validation = prepared.validation_split(VALIDATION, seed)
    assert validation is not None
    found = [
        Row(
            "popularity",
            ranking.measure(ranking.popularity(prepared.num_likes), folded, held),
            None,
        )
    ]
    if min(len(prepared.train), prepared.train.num_columns) <= EASE_MAX_SIDE:
        lam = max(
            EASE_LAMBDAS,
            key=lambda lam: validation_ndcg(
                ease_recommender(ease(fitted.likes, lam)), validation.likes, seed
            ),
        )
        started = time.perf_counter()
        score = ease(prepared.train, lam)
        seconds = time.perf_counter() - started
        found.append(
            Row(
                f"EASE (lambda {lam:g})",
                ranking.measure(ease_recommender(score), folded, held),
                seconds,
            )
        )
    try:
        import implicit  # noqa: F401
    except ImportError:
        return found
    grid = ALS_GRID if len(prepared.train.columns) <= ALS_FULL_GRID_LIKES else ALS_LARGE_GRID
    best = max(
        grid,
        key=lambda grid: validation_ndcg(
            als_recommender(fit_als(fitted.likes, *grid, seed)), validation.likes, seed
        ),
    )
    started = time.perf_counter()
    model = fit_als(prepared.train, *best, seed)
    seconds = time.perf_counter() - started
    factors, regularization, alpha = best
    name = f"ALS (implicit; {factors} factors, reg {regularization:g}, alpha {alpha:g})"
    found.append(Row(name, ranking.measure(als_recommender(model), folded, held), seconds))
    return found


def train(client: me.Client, name: str, preset: str, seed: int) -> tuple[me.ModelInfo, float]:
    started = time.perf_counter()
    *_, info = client.train(
        name, dataset=DATASET, seed=seed, holdout_fraction=HOLDOUT, preset=preset
    )
    assert isinstance(info, me.ModelInfo)
    return info, time.perf_counter() - started


def prepared_rows(data_dir: Path, info: me.ModelInfo) -> rows.Rows:
    """The model's own training and held-out rows, rebuilt from its dataset and settings."""
    assert info.dataset is not None
    d = info.dataset
    source = config.resolve_dataset_training(
        {
            "dataset": {"name": d.dataset.name, "version": d.dataset.version},
            "like_threshold": d.like_threshold,
            "min_likes_per_watcher": d.min_likes_per_watcher,
            "min_likes_per_movie": d.min_likes_per_movie,
            "holdout_fraction": d.holdout_fraction,
            "seed": d.seed,
        }
    )
    dataset = DatasetStore(data_dir).load(d.dataset.name, d.dataset.version)
    prepared = rows.prepare(dataset, source)
    with np.load(data_dir / info.name / str(info.version) / HELDOUT) as stored:
        same = np.array_equal(stored["watcher_ids"], prepared.heldout_watchers.ids) and (
            np.array_equal(stored["columns"], prepared.heldout.columns)
        )
    if not same:
        raise SystemExit(f"{info.name} v{info.version}: the rebuilt split is not the server's")
    return prepared


def ours(info: me.ModelInfo, label: str, seconds: float) -> Row:
    return Row(label, {f: info.metrics[f] for f in FIGURES}, seconds)


def table(rows_: list[Row]) -> str:
    lines = ["| method | Recall@20 | Recall@50 | NDCG@100 | Train (s) |", "|---|---|---|---|---|"]
    for r in rows_:
        seconds = "" if r.seconds is None else f"{r.seconds:.1f}"
        figures = " | ".join(f"{r.figures[f]:.3f}" for f in FIGURES)
        lines.append(f"| {r.method} | {figures} | {seconds} |")
    return "\n".join(lines)


def mean_rows(per_seed: list[list[Row]]) -> list[Row]:
    """Row i of every seed's table, averaged (EASE's and ALS's tuned settings differ by seed)."""
    out = []
    for same in zip(*per_seed, strict=True):
        name = (
            same[0].method.split(" (")[0] if len({r.method for r in same}) > 1 else same[0].method
        )
        figures = {f: float(np.mean([r.figures[f] for r in same])) for f in FIGURES}
        timed = [r.seconds for r in same if r.seconds is not None]
        out.append(Row(name, figures, float(np.mean(timed)) if timed else None))
    return out


def _named(found: list[Row], method: str) -> Row:
    return next(r for r in found if r.method.split(" (")[0] == method)


def versus_als(per_seed: list[list[Row]]) -> str:
    """Ours over ALS on each seed (Recall@20, NDCG@100), or nothing without an ALS row."""
    ratios = [
        " / ".join(
            f"{_named(s, OURS).figures[f] / _named(s, 'ALS').figures[f]:.3f}x"
            for f in ("recall_at_20", "ndcg_at_100")
        )
        for s in per_seed
        if any(r.method.startswith("ALS") for r in s)
    ]
    return f"ours / ALS, Recall@20 / NDCG@100 by seed: {', '.join(ratios)}" if ratios else ""


def verdict(per_seed: list[list[Row]], mean: list[Row]) -> str:
    """The issue's targets for the dataset defaults, each met or not."""
    if not any(r.method.startswith("EASE") for r in mean):
        return "(no EASE row: EASE's movies x movies inverse does not fit at this size)"
    ease_row, our_row = _named(mean, "EASE"), _named(mean, OURS)
    ratio = {f: our_row.figures[f] / ease_row.figures[f] for f in FIGURES}
    lift = [
        min(_named(s, OURS).figures[f] / s[0].figures[f] for f in ("recall_at_20", "ndcg_at_100"))
        for s in per_seed
    ]
    slowest = max(_named(s, OURS).seconds or 0.0 for s in per_seed)
    ok = [
        ratio["recall_at_20"] >= TARGET_EASE and ratio["ndcg_at_100"] >= TARGET_EASE,
        min(lift) >= TARGET_POPULARITY,
        slowest <= TARGET_SECONDS,
    ]
    return (
        f"ours / EASE (means): Recall@20 {ratio['recall_at_20']:.3f}x, Recall@50 "
        f"{ratio['recall_at_50']:.3f}x, NDCG@100 {ratio['ndcg_at_100']:.3f}x "
        f"(target >= {TARGET_EASE}: {'met' if ok[0] else 'NOT met'}); "
        f"ours / popularity, worst seed: {min(lift):.2f}x "
        f"(target >= {TARGET_POPULARITY}: {'met' if ok[1] else 'NOT met'}); "
        f"slowest Train {slowest:.1f} s (target <= {TARGET_SECONDS:g} s: "
        f"{'met' if ok[2] else 'NOT met'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--movielens",
        type=Path,
        default=SHARED if SHARED.is_dir() else None,
        required=not SHARED.is_dir(),
        help=f"a MovieLens directory (default: {SHARED}, when present)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--no-notebook",
        action="store_true",
        help="leave out the notebook preset (its dense Keras training takes hours on "
        "ML-10M-sized data)",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    load_before = os.getloadavg()[0]
    started = datetime.now(UTC)
    per_seed: list[list[Row]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        server = start_server(data_dir, Path(tmp) / "server.log")
        try:
            subprocess.run(
                [*CLI, "import", str(args.movielens), "--name", DATASET, "--target", server.target],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            with me.Client(server.target) as client:
                for seed in args.seeds:
                    default, default_seconds = train(client, f"default-{seed}", "default", seed)
                    prepared = prepared_rows(data_dir, default)
                    found = references(prepared, seed)
                    popular = {f: default.metrics[f"popularity_{f}"] for f in FIGURES}
                    if not np.allclose(
                        list(popular.values()), [found[0].figures[f] for f in FIGURES]
                    ):
                        raise SystemExit("popularity differs from the server's: not the same split")
                    found.append(ours(default, OURS, default_seconds))
                    if not args.no_notebook:
                        notebook, seconds = train(client, f"notebook-{seed}", "notebook", seed)
                        found.append(ours(notebook, "ours, notebook preset", seconds))
                    per_seed.append(found)
                    notes.append(
                        f"seed {seed}: {len(prepared.train)} training watchers "
                        f"({default.num_train_watchers}), {len(prepared.heldout)} held out, "
                        f"{prepared.train.num_columns} movies; the defaults ran "
                        f"{int(default.metrics['epochs_run'])} epochs, coverage@20 "
                        f"{default.metrics['coverage_at_20']:.3f}"
                    )
                    print(f"seed {seed} done", file=sys.stderr, flush=True)
        finally:
            server.stop()
    print(
        f"Real-data quality, {args.movielens.name}, {started:%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}\n"
    )
    for seed, found, note in zip(args.seeds, per_seed, notes, strict=True):
        print(f"Seed {seed} ({note})\n\n{table(found)}\n")
    mean = mean_rows(per_seed)
    print(f"Mean of seeds {', '.join(map(str, args.seeds))}\n\n{table(mean)}\n")
    print(verdict(per_seed, mean))
    print(versus_als(per_seed))


if __name__ == "__main__":
    main()
