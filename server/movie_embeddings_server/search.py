"""Exact top-k nearest rows of a matrix by cosine, dot product or Euclidean distance."""

from __future__ import annotations

import numpy as np

METRICS = ("cosine", "dot", "euclidean")


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


def top_k(row_scores: np.ndarray, k: int, excluded: np.ndarray) -> np.ndarray:
    """Indices of the k best rows not in `excluded`, best first, ties by lower index."""
    candidates = np.setdiff1d(np.arange(len(row_scores)), excluded, assume_unique=False)
    k = min(k, len(candidates))
    cand_scores = row_scores[candidates]
    if k < len(candidates):
        # Partition finds the k-th best score in linear time; ties at that score go to the
        # lowest indices, which argpartition alone would pick arbitrarily.
        kth = -np.partition(-cand_scores, k - 1)[k - 1]
        better = np.flatnonzero(cand_scores > kth)
        tied = np.flatnonzero(cand_scores == kth)[: k - len(better)]
        keep = np.concatenate([better, tied])
        candidates, cand_scores = candidates[keep], cand_scores[keep]
    order = np.lexsort((candidates, -cand_scores))
    return candidates[order][:k]
