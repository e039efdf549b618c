"""Recommendations measured on held-out watchers: recall@k, NDCG@k, popularity, coverage, genres."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import Cancelled
from ..model import search
from ..model.inference import ServedModel, Watchers

if TYPE_CHECKING:
    from . import rows
    from .rows import Likes

HELD_SHARE = 0.2  # of each held-out watcher's likes, counted as hits; the rest is folded in
DEPTH = 100  # the longest ranking measured (NDCG@100)
CHUNK_CELLS = 4_000_000  # watchers x movies ranked at once (bounds memory for big catalogues)
GENRE_NEIGHBOURS = 10
GENRE_QUERIES = 1000  # movies whose neighbours are ranked; all of them in smaller catalogues

# Ranks the movies of some watchers: (rows of them, their folded-in likes as dense 0/1 rows)
# -> each one's best DEPTH movies, best first, none of its folded-in likes among them.
Recommender = Callable[[np.ndarray, np.ndarray], Sequence[np.ndarray]]


def hit_matrix(ranked: Sequence[np.ndarray], held: np.ndarray) -> np.ndarray:
    """(n, DEPTH) bool: whether the movie at each rank is one of the watcher's held-back
    likes (`held`: dense 0/1 rows); a ranking shorter than DEPTH misses at the end."""
    hits = np.zeros((len(ranked), DEPTH), dtype=bool)
    for i, movies in enumerate(ranked):
        hits[i, : len(movies)] = held[i, movies[:DEPTH]] > 0
    return hits


def recall_at(hits: np.ndarray, num_held: np.ndarray, k: int) -> np.ndarray:
    """Per watcher: hits among its top k over min(k, its held-back likes)."""
    return hits[:, :k].sum(axis=1) / np.minimum(k, num_held)


def ndcg_at(hits: np.ndarray, num_held: np.ndarray, k: int) -> np.ndarray:
    """Per watcher: DCG of its top k (a hit at rank r, from 1, is worth 1 / log2(r + 1))
    over the DCG of a ranking with all its held-back likes first."""
    gains = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(gains)[np.minimum(k, num_held) - 1]
    return (hits[:, :k] * gains).sum(axis=1) / ideal


def measure(recommend: Recommender, folded: Likes, held: Likes) -> dict[str, float]:
    """recall_at_20, recall_at_50, ndcg_at_100 (means over the watchers with a held-back
    like) and coverage_at_20 (share of the catalogue in some watcher's top 20)."""
    counted = np.flatnonzero(np.diff(held.indptr) > 0)
    per_chunk = max(1, CHUNK_CELLS // max(1, folded.num_columns))
    recall_20, recall_50, ndcg_100 = [], [], []
    shown = np.zeros(folded.num_columns, dtype=bool)
    for start in range(0, len(counted), per_chunk):
        rows = counted[start : start + per_chunk]
        ranked = recommend(rows, folded.dense(rows))
        hits = hit_matrix(ranked, held.dense(rows))
        num_held = np.diff(held.indptr)[rows]
        recall_20.append(recall_at(hits, num_held, 20))
        recall_50.append(recall_at(hits, num_held, 50))
        ndcg_100.append(ndcg_at(hits, num_held, DEPTH))
        for movies in ranked:
            shown[movies[:20]] = True
    if not len(counted):
        return {}
    return {
        "recall_at_20": float(np.concatenate(recall_20).mean()),
        "recall_at_50": float(np.concatenate(recall_50).mean()),
        "ndcg_at_100": float(np.concatenate(ndcg_100).mean()),
        "coverage_at_20": float(shown.mean()),
    }


def by_scores(score: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Recommender:
    """A Recommender ranking by `score(rows, folded)` -> (n, movies) scores, higher first,
    ties by lower row, folded-in likes left out."""
    return lambda rows, folded: search.top_k_rows(score(rows, folded), DEPTH, folded > 0)


def popularity(num_likes: np.ndarray) -> Recommender:
    """Most-liked first (likes among the training watchers), the same for everyone."""
    scores = num_likes.astype(np.float64)
    return by_scores(lambda rows, folded: np.broadcast_to(scores, folded.shape))


def genre_sets(genres: Sequence[list[str]]) -> np.ndarray:
    """(movies, distinct genres) bool: which genres each movie has."""
    names = sorted({name for names in genres for name in names})
    column = {name: c for c, name in enumerate(names)}
    out = np.zeros((len(genres), len(names)), dtype=bool)
    for row, names in enumerate(genres):
        out[row, [column[name] for name in names]] = True
    return out


def genre_overlap(embedding: np.ndarray, genres: np.ndarray, seed: int) -> dict[str, float]:
    """Share of each movie's GENRE_NEIGHBOURS cosine-nearest movies that share a genre with it
    (`genres` from genre_sets), and the same share over every other movie (random pairs);
    averaged over the movies with a genre (GENRE_QUERIES of them, drawn with `seed`, in
    larger catalogues). Empty when no movie has a genre."""
    queries = np.flatnonzero(genres.any(axis=1))
    if len(queries) < 2 or len(embedding) <= GENRE_NEIGHBOURS:
        return {}
    if len(queries) > GENRE_QUERIES:
        queries = np.sort(np.random.default_rng(seed).choice(queries, GENRE_QUERIES, False))
    unit = search.unit_rows(embedding.astype(np.float32))
    weights = genres.astype(np.float32)
    neighbour, random = [], []
    per_chunk = max(1, CHUNK_CELLS // len(embedding))
    for start in range(0, len(queries), per_chunk):
        chunk = queries[start : start + per_chunk]
        shares = (weights[chunk] @ weights.T) > 0  # (chunk, movies): shares a genre
        shares[np.arange(len(chunk)), chunk] = False  # a movie is not its own pair
        similar = unit[chunk] @ unit.T
        similar[np.arange(len(chunk)), chunk] = -np.inf
        nearest = np.argpartition(-similar, GENRE_NEIGHBOURS, axis=1)[:, :GENRE_NEIGHBOURS]
        neighbour.append(np.take_along_axis(shares, nearest, axis=1).mean(axis=1))
        random.append(shares.sum(axis=1) / (len(embedding) - 1))
    return {
        "neighbour_genre_overlap": float(np.concatenate(neighbour).mean()),
        "random_genre_overlap": float(np.concatenate(random).mean()),
    }


def features_as_trained(model: ServedModel, watchers: rows.Watchers) -> tuple[np.ndarray, ...]:
    """The watchers' ages and education levels as the model takes them: an absent feature is
    what training saw, 0 after standardisation (the mean age; education 0)."""
    ages = np.where(np.isfinite(watchers.age_years), watchers.age_years, model.age_mean)
    return ages, np.nan_to_num(watchers.education)


def evaluate(
    model: ServedModel,
    likes: Likes,
    watchers: rows.Watchers,
    seed: int,
    stopped: Callable[[], bool] = lambda: False,
) -> dict[str, float]:
    """A dataset model's figures on its held-out watchers (`likes`, `watchers`), each with a
    seeded share of its likes folded in: the model's rankings through Reconstruct's path, the
    same for popularity (popularity_*), coverage_at_20, and genre overlaps where genres exist.
    Raises Cancelled between two chunks of watchers once `stopped()`."""
    folded, held = likes.fold_in(HELD_SHARE, seed)
    ages, education = features_as_trained(model, watchers)

    def recommend(rows: np.ndarray, ratings: np.ndarray) -> list[np.ndarray]:
        if stopped():
            raise Cancelled("training was cancelled")
        return model.reconstruct(Watchers(ratings, ages[rows], education[rows]), DEPTH)[1]

    metrics = measure(recommend, folded, held)
    popular = measure(popularity(model.catalogue.num_likes), folded, held)
    metrics.update({f"popularity_{k}": v for k, v in popular.items() if k != "coverage_at_20"})
    genres = genre_sets([model.catalogue.genre_list(row) for row in range(model.num_movies)])
    metrics.update(genre_overlap(model.embedding, genres, seed))
    return metrics
