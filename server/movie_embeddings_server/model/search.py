"""Exact top-k nearest rows of a matrix by cosine, dot product or Euclidean distance."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# How a pass multiplies (left, right): np.matmul, or a product split over cores.
Product = Callable[[np.ndarray, np.ndarray], np.ndarray]
_BLOCK = 256  # rows a float64 score (dot, Euclidean) works on at once: ~400 kB, in cache


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), for cosine scores by one matrix product."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def scores(matrix: np.ndarray, unit: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Score of every row against `query`; higher is nearer for every metric.

    Dot and Euclidean are computed in float64: float32 overflows for large query values.
    They go a block of rows at a time: the whole matrix in float64 would be a temporary
    twice its size at each call (59,047 x 200: 94 MB; dot 26 ms, Euclidean 57 ms, against
    8 and 19 by blocks), and each row's score is the same either way.
    """
    if metric == "cosine":
        norm = np.linalg.norm(query)
        # A zero vector has no direction: every cosine with it is 0 (a movie nobody liked
        # in training keeps its zero-initialised row).
        if norm == 0:
            return np.zeros(len(unit), dtype=unit.dtype)
        return cosines(unit, (query / norm)[None])[0]
    query = query.astype(np.float64)
    found = np.empty(len(matrix))
    start = 0
    # Blocks start at multiples of _BLOCK, as BLAS's groups of rows do in one product, and
    # none is a row alone (numpy's dot product of one row sums it in another order).
    for stop in [*range(_BLOCK, len(matrix) - 1, _BLOCK), len(matrix)]:
        rows, out = matrix[start:stop], found[start:stop]
        start = stop
        if metric == "dot":
            np.matmul(rows, query, out=out)
        else:  # minus the distance, summed as np.linalg.norm(rows - query, axis=1) sums it
            squares = rows - query
            squares *= squares
            np.negative(np.sqrt(np.add.reduce(squares, axis=1)), out=out)
    return found


def cosines(unit: np.ndarray, queries: np.ndarray, product: Product = np.matmul) -> np.ndarray:
    """Cosine scores (queries, rows) of unit-length `queries` against every row of `unit`, the
    matrix read once for them all: one query alone (as `scores` scores a cosine) by one
    matrix-vector product, several by `product` (whose sums may round otherwise: within 1e-6)."""
    if len(queries) == 1:
        return (unit @ queries[0])[None]
    return product(queries, unit.T)


SMALL = 4096  # up to this many rows a full stable sort is cheaper than anything clever
_SAMPLE = 1024  # scores sampled to guess a threshold that keeps a few times k candidates


def top_k(
    row_scores: np.ndarray,
    k: int,
    excluded: np.ndarray | list[int],
    leave_out: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the k best rows not in `excluded` (indices or a mask) nor masked by
    `leave_out` (a filter's mask), best first, ties by lower index.

    Exact. Large arrays avoid sorting, partitioning or even copying everything: a threshold
    read off a strided sample keeps a few times k candidates (all scores >= it, so every tie
    at the k-th score too), the excluded and masked ones are dropped from those, and only the
    rest are sorted; if too few pass, all are ranked. The scores are read once, by the
    comparison: a float64 copy with the excluded rows set to -inf cost 130-400 us a call
    at 59,047 rows in a busy server (40 us in a warm loop), the rest of a search ~40 us.
    """
    n = len(row_scores)
    excluded = np.asarray(excluded)
    excluded = np.flatnonzero(excluded) if excluded.dtype == bool else excluded.astype(np.int64)
    if n > SMALL and k < n // 64:
        step = n // _SAMPLE
        sample = row_scores[::step].copy()
        sample[excluded[excluded % step == 0] // step] = -np.inf
        if leave_out is not None:
            sample[leave_out[::step]] = -np.inf
        rank = min(len(sample) - 1, max(4 * k, 64) * len(sample) // n)
        threshold = np.partition(sample, len(sample) - 1 - rank)[len(sample) - 1 - rank]
        candidates = np.flatnonzero(row_scores >= threshold)
        if excluded.size:
            candidates = candidates[~np.isin(candidates, excluded)]
        if leave_out is not None:
            candidates = candidates[~leave_out[candidates]]
        if threshold > -np.inf and len(candidates) >= k:
            order = np.lexsort((candidates, -row_scores[candidates]))[:k]
            return candidates[order]
    # Negated (exact in any float type) so that a stable ascending sort puts ties by lower
    # index; excluded rows, and any scored -inf, go last as +inf and are cut off.
    negated = -row_scores
    negated[excluded] = np.inf
    if leave_out is not None:
        negated[leave_out] = np.inf
    order = negated.argsort(kind="stable")[:k]
    if len(order) and negated[order[-1]] == np.inf:
        order = order[: np.count_nonzero(negated[order] < np.inf)]
    return order


def top_k_rows(scores: np.ndarray, k: int, excluded: np.ndarray) -> list[np.ndarray]:
    """top_k of every row of `scores`, `excluded` a boolean mask of the same shape."""
    return unpadded(top_k_padded(scores, k, excluded))


def unpadded(padded: np.ndarray) -> list[np.ndarray]:
    """Each row of a `top_k_padded` matrix without its -1 pads."""
    return [row[row >= 0] for row in padded]


# Subtracted from an excluded score's key (keys are within +-2^43): below every other key.
_EXCLUDED = np.int64(1 << 50)


def top_k_padded(scores: np.ndarray, k: int, excluded: np.ndarray) -> np.ndarray:
    """top_k of every row of `scores` as a (rows, min(k, columns)) matrix, -1 where a row has
    fewer than k rows not excluded; `excluded` a boolean mask of the same shape."""
    n = scores.shape[1]
    k = min(k, n)
    if n > SMALL:
        out = np.full((len(scores), k), -1, dtype=np.int64)
        for i, (row, mask) in enumerate(zip(scores, excluded, strict=True)):
            chosen = top_k(row, k, np.flatnonzero(mask))
            out[i, : len(chosen)] = chosen
        return out
    if scores.dtype != np.float32:
        masked = np.where(excluded, -np.inf, scores.astype(np.float64))
        order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
        return np.where(np.take_along_axis(excluded, order, 1), -1, order)
    # float32 scores as integers in the same order, times 4096 plus (4095 - column): unique
    # keys, larger for a higher score and then a lower column, that carry their column. A
    # partition and a sort of the keys themselves pick exactly what a stable sort of the
    # scores would, several times faster than that argsort (1,000 x 80: ~1 ms, not 3-4).
    bits = scores.view(np.int32)
    keys = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)
    keys <<= 12
    keys += np.arange(SMALL - 1, SMALL - 1 - n, -1)
    keys -= excluded * _EXCLUDED  # a product: ~4x faster than a masked assignment
    best = np.partition(keys, n - k, axis=1)[:, n - k :] if 0 < k < n else keys[:, n - k :]
    best.sort(axis=1)
    best = best[:, ::-1]
    return np.where(best < -_EXCLUDED // 2, -1, (SMALL - 1) - (best & (SMALL - 1)))
