"""How much a model learned: neighbour purity of its movie vectors, held-out cross-entropy."""

from __future__ import annotations

import numpy as np

from ..model import search
from ..model.inference import ServedModel, Watchers
from .synthetic import generate, like_probability

HELDOUT_WATCHERS = 2000
EPSILON = 1e-7  # Keras clips probabilities to [eps, 1 - eps] in binary cross-entropy too
PURITY_QUERIES = 200  # movies whose neighbours are ranked; all of them in smaller catalogues
CHUNK_CELLS = 4_000_000  # watchers x movies evaluated at once (bounds memory for big catalogues)


def neighbour_purity(matrix: np.ndarray, num_types: int, seed: int = 0) -> float:
    """Share of each movie's num_movies/num_types - 1 cosine-nearest movies in its group.

    Averaged over every movie, or over PURITY_QUERIES movies drawn with `seed` when the
    catalogue is larger (ranking all of 100,000 movies' neighbours would take minutes).
    """
    num_movies = len(matrix)
    k = num_movies // num_types - 1
    if k < 1:
        return float("nan")
    unit = search.unit_rows(matrix.astype(np.float64))
    queries = np.arange(num_movies)
    if num_movies > PURITY_QUERIES:
        queries = np.random.default_rng(seed).choice(num_movies, PURITY_QUERIES, replace=False)
    groups = np.arange(num_movies) % num_types
    shares = [
        np.mean(groups[search.top_k(unit @ unit[m], k, np.array([m]))] == groups[m])
        for m in queries
    ]
    return float(np.mean(shares))


def cross_entropy(p_true: np.ndarray, q: np.ndarray) -> float:
    """Mean binary cross-entropy (nats per movie) of predictions q against true probabilities."""
    q = np.clip(q.astype(np.float64), EPSILON, 1 - EPSILON)
    return float(np.mean(-(p_true * np.log(q) + (1 - p_true) * np.log1p(-q))))


def binary_entropy(p: np.ndarray) -> float:
    """Mean entropy (nats) of Bernoulli(p): the Bayes bound of cross_entropy against p."""
    p = p.astype(np.float64)
    return float(np.mean(-(p * np.log(p) + (1 - p) * np.log1p(-p))))


def evaluate(model: ServedModel, num_types: int, seed: int) -> dict[str, float]:
    """Purity, and Reconstruct's cross-entropy on fresh watchers (other seed streams)."""
    rows = max(1, CHUNK_CELLS // model.num_movies)
    heldout_sum = bayes_sum = 0.0
    for chunk, start in enumerate(range(0, HELDOUT_WATCHERS, rows)):
        n = min(rows, HELDOUT_WATCHERS - start)
        fresh = generate(n, model.num_movies, num_types, [seed, 1, chunk])
        watchers = Watchers(fresh.ratings.astype(np.float32), fresh.age_years, fresh.education)
        p_true = like_probability(fresh.types, model.num_movies, num_types)
        heldout_sum += n * cross_entropy(p_true, model.forward(watchers))
        bayes_sum += n * binary_entropy(p_true)
    heldout, bayes = heldout_sum / HELDOUT_WATCHERS, bayes_sum / HELDOUT_WATCHERS
    return {
        "neighbour_purity": neighbour_purity(model.embedding, num_types, seed),
        "heldout_cross_entropy": heldout,
        "bayes_cross_entropy": bayes,
        "cross_entropy_ratio": heldout / bayes,
    }
