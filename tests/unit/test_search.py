"""Exact scores and top-k against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from movie_embeddings_server.model import search


def _matrix(seed: int = 0, rows: int = 50, dim: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)


def _brute_top_k(row_scores: np.ndarray, k: int, excluded: np.ndarray) -> list[int]:
    banned = set(np.asarray(excluded).tolist())
    candidates = [i for i in range(len(row_scores)) if i not in banned]
    return sorted(candidates, key=lambda i: (-row_scores[i], i))[:k]


def test_unit_rows_have_length_one_and_keep_direction() -> None:
    m = _matrix()
    unit = search.unit_rows(m)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(unit * np.linalg.norm(m, axis=1, keepdims=True), m, rtol=1e-5)
    assert unit.dtype == m.dtype


def test_unit_rows_leave_zero_rows_zero() -> None:
    m = _matrix(rows=4)
    m[2] = 0
    unit = search.unit_rows(m)
    assert np.all(np.isfinite(unit))
    np.testing.assert_array_equal(unit[2], 0)
    np.testing.assert_allclose(np.linalg.norm(unit[[0, 1, 3]], axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_cosine_scores_equal_brute_force(seed: int) -> None:
    m = _matrix(seed)
    q = np.random.default_rng(100 + seed).normal(size=m.shape[1]).astype(np.float32)
    got = search.scores(m, search.unit_rows(m), q, "cosine")
    expected = [
        float(np.dot(row, q) / (np.linalg.norm(row) * np.linalg.norm(q))) for row in m.astype(float)
    ]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.shape == (len(m),)


@pytest.mark.parametrize("scale", [7.5, 1e-3])
def test_cosine_ignores_the_query_length(scale: float) -> None:
    m = _matrix()
    unit = search.unit_rows(m)
    q = _matrix(seed=9, rows=1)[0]
    np.testing.assert_allclose(
        search.scores(m, unit, q, "cosine"), search.scores(m, unit, scale * q, "cosine"), atol=1e-6
    )


def test_cosine_with_a_zero_query_is_zero_in_the_matrix_dtype() -> None:
    m = _matrix()
    got = search.scores(m, search.unit_rows(m), np.zeros(m.shape[1], np.float32), "cosine")
    np.testing.assert_array_equal(got, np.zeros(len(m)))
    assert got.dtype == search.scores(m, search.unit_rows(m), m[0], "cosine").dtype == m.dtype


def test_cosines_of_several_queries_are_each_querys_scores() -> None:
    m = _matrix(rows=300)
    unit = search.unit_rows(m)
    queries = _matrix(seed=5, rows=4)
    units = np.stack([q / np.linalg.norm(q) for q in queries])  # as `scores` divides
    found = search.cosines(unit, units)
    assert found.shape == (4, 300)
    for query, row in zip(queries, found, strict=True):
        np.testing.assert_allclose(row, search.scores(m, unit, query, "cosine"), atol=1e-6)
    # One query alone is scored exactly as `scores` scores it (which divides by its norm).
    np.testing.assert_array_equal(
        search.cosines(unit, units[:1])[0], search.scores(m, unit, queries[0], "cosine")
    )


@pytest.mark.parametrize("seed", range(3))
def test_dot_scores_equal_brute_force(seed: int) -> None:
    m = _matrix(seed)
    q = np.random.default_rng(100 + seed).normal(size=m.shape[1]).astype(np.float32)
    got = search.scores(m, search.unit_rows(m), q, "dot")
    expected = [sum(float(a) * float(b) for a, b in zip(row, q, strict=True)) for row in m]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_euclidean_scores_are_negated_distances(seed: int) -> None:
    m = _matrix(seed)
    q = np.random.default_rng(100 + seed).normal(size=m.shape[1]).astype(np.float32)
    got = search.scores(m, search.unit_rows(m), q, "euclidean")
    expected = [
        -np.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(row, q, strict=True))) for row in m
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.all(got <= 0)


def test_euclidean_prefers_the_nearest_row() -> None:
    m = np.array([[0, 0], [3, 4], [1, 1]], dtype=np.float32)
    got = search.scores(m, search.unit_rows(m), np.array([1, 1], np.float32), "euclidean")
    np.testing.assert_allclose(got, [-np.sqrt(2), -np.sqrt(13), 0.0], rtol=1e-6)
    assert search.top_k(got, 3, np.array([], np.int64)).tolist() == [2, 0, 1]


@pytest.mark.parametrize("rows", [1, 2, 255, 256, 257, 513, 1100])
def test_dot_and_euclidean_by_blocks_equal_one_pass_over_the_matrix(rows: int) -> None:
    """Scored a block of rows at a time, each row's float64 score is, bit for bit, the one a
    single float64 pass over the whole matrix gives (on one BLAS thread, as the server
    runs), large values included."""
    m = _matrix(rows, rows=rows, dim=200) * np.float32(1e17)
    q = np.random.default_rng(rows).normal(size=200).astype(np.float32) * np.float32(1e17)
    unit = search.unit_rows(m)
    with threadpool_limits(1, user_api="blas"):
        np.testing.assert_array_equal(search.scores(m, unit, q, "dot"), m @ q.astype(np.float64))
        np.testing.assert_array_equal(
            search.scores(m, unit, q, "euclidean"),
            -np.linalg.norm(m - q.astype(np.float64), axis=1),
        )


@pytest.mark.parametrize("k", [0, 1, 5, 49, 50, 51, 1000])
def test_top_k_returns_min_k_candidates_best_first(k: int) -> None:
    s = np.random.default_rng(k).normal(size=50).astype(np.float32)
    got = search.top_k(s, k, np.array([], np.int64))
    assert len(got) == min(k, 50)
    assert got.tolist() == _brute_top_k(s, k, np.array([]))
    assert np.all(np.diff(s[got]) <= 0)


def test_top_k_larger_than_candidates_returns_all_of_them() -> None:
    s = np.array([0.1, 0.9, 0.5, 0.3], dtype=np.float32)
    got = search.top_k(s, 10, np.array([2]))
    assert got.tolist() == [1, 3, 0]


def test_top_k_never_returns_excluded() -> None:
    s = np.arange(20, dtype=np.float32)  # the best rows are the highest indices
    excluded = np.array([19, 18, 5, 18])  # duplicates are fine
    got = search.top_k(s, 5, excluded)
    assert got.tolist() == [17, 16, 15, 14, 13]
    assert search.top_k(s, 100, excluded).tolist() == [
        i for i in range(19, -1, -1) if i not in (19, 18, 5)
    ]


def test_top_k_with_everything_excluded_is_empty() -> None:
    s = np.ones(4, dtype=np.float32)
    assert search.top_k(s, 3, np.arange(4)).tolist() == []


def test_top_k_of_no_rows_is_empty() -> None:
    assert search.top_k(np.zeros(0, np.float32), 3, np.array([], np.int64)).tolist() == []


def test_top_k_ties_go_to_the_lower_index_when_all_rows_fit() -> None:
    s = np.array([1.0, 2.0, 1.0, 2.0, 1.0], dtype=np.float32)
    assert search.top_k(s, 5, np.array([], np.int64)).tolist() == [1, 3, 0, 2, 4]


def test_top_k_ties_go_to_the_lower_index_at_the_cut() -> None:
    # Six rows tie for the last place: the kept one must be the lowest index among them.
    s = np.zeros(33, dtype=np.float32)
    s[[1, 2, 3, 4]] = 2.0
    s[[17, 18, 19, 26, 30, 32]] = 1.0
    assert search.top_k(s, 5, np.array([], np.int64)).tolist() == [1, 2, 3, 4, 17]


def test_top_k_matches_brute_force_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        s = rng.integers(0, 3, n).astype(np.float32)
        k = int(rng.integers(0, n + 2))
        excluded = rng.choice(n, int(rng.integers(0, n)), replace=False)
        got = search.top_k(s, k, excluded).tolist()
        assert got == _brute_top_k(s, k, excluded), (s.tolist(), k, excluded.tolist())


def _brute_order(scores: np.ndarray, k: int, excluded: np.ndarray) -> np.ndarray:
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))
    return order[~np.isin(order, excluded)][:k]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 10, 100])
def test_top_k_of_a_large_array_is_exact(seed: int, k: int) -> None:
    # Past search.SMALL rows the sampled-threshold path runs; with rounded scores many tie.
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=50_000), 2).astype(np.float32)
    excluded = rng.choice(50_000, 20, replace=False)
    excluded = np.append(excluded, np.argmax(scores))  # the best one is excluded too
    assert search.top_k(scores, k, excluded).tolist() == _brute_order(scores, k, excluded).tolist()


@pytest.mark.parametrize("n", [200, 1000, search.SMALL, search.SMALL + 1])
@pytest.mark.parametrize("k", [1, 3])
def test_top_k_around_the_sampled_path_is_exact(n: int, k: int) -> None:
    # A small k against a few hundred rows and either side of SMALL: the cut-over points.
    scores = np.random.default_rng(n + k).integers(0, 50, n).astype(np.float32)
    excluded = np.array([int(np.argmax(scores))])
    assert search.top_k(scores, k, excluded).tolist() == _brute_order(scores, k, excluded).tolist()


def test_top_k_of_a_large_constant_array_falls_back_to_ranking_all() -> None:
    scores = np.zeros(10_000)
    assert search.top_k(scores, 5, np.array([0, 2])).tolist() == [1, 3, 4, 5, 6]


@pytest.mark.parametrize("movies", [80, search.SMALL + 100])
def test_top_k_rows_equals_top_k_of_each_row(movies: int) -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, (12, movies)).astype(np.float32)  # many ties: lower index first
    excluded = rng.random((12, movies)) < 0.5
    excluded[0] = True  # nothing left to recommend
    excluded[1] = np.arange(movies) >= 3  # fewer candidates than k: 0, 1, 2
    rows = search.top_k_rows(scores, 10, excluded)
    for row, mask, got in zip(scores, excluded, rows, strict=True):
        assert got.tolist() == _brute_order(row, 10, np.flatnonzero(mask)).tolist()
    assert len(rows[0]) == 0 and len(rows[1]) == 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [0, 1, 7, 40, 45])
def test_top_k_padded_is_a_stable_sort_with_minus_one_pads(dtype: type, k: int) -> None:
    """The float32 path partitions integer keys instead of sorting: the same order, ties by
    lower index, negative scores included, -1 past a row's candidates."""
    rng = np.random.default_rng(k)
    scores = (rng.integers(-3, 4, (30, 40)) / 4).astype(dtype)  # many ties, both signs
    excluded = rng.random(scores.shape) < rng.random((30, 1))
    excluded[0] = True
    padded = search.top_k_padded(scores, k, excluded)
    assert padded.shape == (30, min(k, 40))
    for row, mask, got in zip(scores, excluded, padded, strict=True):
        want = _brute_order(row.astype(np.float64), k, np.flatnonzero(mask)).tolist()
        assert got.tolist() == want + [-1] * (min(k, 40) - len(want))
        assert search.top_k(row, k, np.flatnonzero(mask).tolist()).tolist() == want


def test_top_k_padded_of_a_large_catalogue_pads_short_rows_with_minus_one() -> None:
    # Past search.SMALL columns each row goes through top_k: a row with fewer than k
    # candidates left still ends in -1s.
    n = search.SMALL + 10
    scores = np.random.default_rng(5).random((3, n)).astype(np.float32)
    excluded = np.zeros((3, n), dtype=bool)
    excluded[1, 2:] = True  # two candidates: rows 0 and 1
    excluded[2] = True  # none
    padded = search.top_k_padded(scores, 5, excluded)
    assert padded.dtype == np.int64
    assert padded[0].tolist() == _brute_order(scores[0], 5, np.array([], dtype=int)).tolist()
    assert padded[1].tolist() == [*_brute_order(scores[1], 2, np.arange(2, n)).tolist(), -1, -1, -1]
    assert padded[2].tolist() == [-1] * 5


def test_top_k_of_a_large_array_mostly_excluded_is_exact() -> None:
    # The sampled threshold can be -inf (most rows excluded), or keep fewer than k rows (the
    # sample sees only a few high scores): both must fall back to ranking every row.
    n, stride = 10_000, 10_000 // 1024  # search's sample: every 9th row
    scores = np.full(n, 0.1, dtype=np.float32)
    high = np.arange(0, 50 * stride, stride)  # 50 high scores, all of them sampled
    scores[high] = np.linspace(2.0, 1.0, 50)
    others = np.setdiff1d(np.arange(n), np.arange(0, n, stride))[:60]  # never sampled
    excluded = np.setdiff1d(np.arange(n), np.concatenate([high, others]))
    got = search.top_k(scores, 100, excluded).tolist()
    assert got == _brute_order(scores, 100, excluded).tolist()
    assert got[:50] == high.tolist() and len(got) == 100
    only_three = np.setdiff1d(np.arange(n), [5, 500, 5000])
    assert search.top_k(scores, 5, only_three).tolist() == [5, 500, 5000]


@pytest.mark.parametrize("n", [50, 20_000])
@pytest.mark.parametrize("share", [0.3, 0.75, 0.999])
def test_top_k_leaves_out_a_mask_as_it_does_excluded_rows(n: int, share: float) -> None:
    # `share` of the rows masked: a few, most (as a floor of likes does), all but a handful.
    rng = np.random.default_rng(n)
    row_scores = rng.random(n).astype(np.float32)
    excluded = rng.choice(n, 5, replace=False).tolist()
    leave_out = rng.random(n) < share
    merged = leave_out.copy()
    merged[excluded] = True
    before = row_scores.copy()
    got = search.top_k(row_scores, 10, excluded, leave_out)
    assert got.tolist() == search.top_k(row_scores, 10, merged).tolist()
    assert got.tolist() == _brute_order(row_scores, 10, np.flatnonzero(merged)).tolist()
    assert not merged[got].any()
    np.testing.assert_array_equal(row_scores, before)  # the caller's scores are untouched
