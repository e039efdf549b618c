"""Exact top-k nearest rows of a matrix by cosine, dot product or Euclidean distance."""

from __future__ import annotations

import numpy as np


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), for cosine scores by one matrix product."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def scores(matrix: np.ndarray, unit: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Score of every row against `query`; higher is nearer for every metric.

    Dot and Euclidean are computed in float64: float32 overflows for large query values.
    """
    if metric == "cosine":
        norm = np.linalg.norm(query)
        # A zero vector has no direction: every cosine with it is 0 (a movie nobody liked
        # in training keeps its zero-initialised row).
        return unit @ (query / norm) if norm > 0 else np.zeros(len(unit), dtype=unit.dtype)
    query = query.astype(np.float64)
    if metric == "dot":
        return matrix @ query
    return -np.linalg.norm(matrix - query, axis=1)


SMALL = 4096  # up to this many rows a full stable sort is cheaper than anything clever
_SAMPLE = 1024  # scores sampled to guess a threshold that keeps a few times k candidates


def top_k(row_scores: np.ndarray, k: int, excluded: np.ndarray) -> np.ndarray:
    """Indices of the k best rows not in `excluded`, best first, ties by lower index.

    Exact. Large arrays avoid sorting or partitioning everything: a threshold read off a
    strided sample keeps a few times k candidates (all scores >= it, so every tie at the
    k-th score too), and only those are sorted; if too few pass, all are ranked.
    """
    scores = row_scores.astype(np.float64)  # a copy; excluded rows become -inf in it
    scores[excluded] = -np.inf
    n = len(scores)
    if n > SMALL and k < n // 64:
        sample = scores[:: n // _SAMPLE]
        rank = min(len(sample) - 1, max(4 * k, 64) * len(sample) // n)
        threshold = np.partition(sample, len(sample) - 1 - rank)[len(sample) - 1 - rank]
        candidates = np.flatnonzero(scores >= threshold)
        if threshold > -np.inf and len(candidates) >= k:
            order = np.lexsort((candidates, -scores[candidates]))[:k]
            return candidates[order]
    available = n - np.count_nonzero(scores == -np.inf)
    return np.argsort(-scores, kind="stable")[: min(k, available)]


def top_k_rows(scores: np.ndarray, k: int, excluded: np.ndarray) -> list[np.ndarray]:
    """top_k of every row of `scores`, `excluded` a boolean mask of the same shape."""
    if scores.shape[1] > SMALL:
        return [
            top_k(row, k, np.flatnonzero(mask)) for row, mask in zip(scores, excluded, strict=True)
        ]
    masked = np.where(excluded, -np.inf, scores.astype(np.float64))
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    available = scores.shape[1] - excluded.sum(axis=1)
    return [
        row[:count] for row, count in zip(order, np.minimum(available, k).tolist(), strict=True)
    ]
