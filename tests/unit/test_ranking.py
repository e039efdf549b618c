"""Held-out ranking figures on hand-made rankings and likes whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from movie_embeddings_server.training import ranking
from movie_embeddings_server.training.rows import Likes


def _likes(rows: list[list[int]], num_columns: int) -> Likes:
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return Likes(indptr, np.array([c for r in rows for c in r], np.int32), num_columns)


def _row(likes: Likes, i: int) -> set[int]:
    return set(likes.columns[likes.indptr[i] : likes.indptr[i + 1]].tolist())


def _fixed(rankings: list[list[int]]) -> ranking.Recommender:
    """Recommends rankings[row] to watcher `row`, whatever it folded in."""
    return lambda rows, folded: [np.array(rankings[r], np.int64) for r in rows]


def _hits(ranks: list[int]) -> np.ndarray:
    """One watcher's hit row with hits at these ranks (from 1)."""
    hits = np.zeros((1, ranking.DEPTH), dtype=bool)
    hits[0, [r - 1 for r in ranks]] = True
    return hits


def test_recall_divides_by_the_smaller_of_k_and_the_held_back_likes() -> None:
    # 2 held back, both in the top 20 (ranks 1 and 3): all found.
    assert ranking.recall_at(_hits([1, 3]), np.array([2]), 20)[0] == 1.0
    # 4 held back, one at rank 19 and one at rank 21: 1 of 4 in the top 20, 2 of 4 in the top 50.
    assert ranking.recall_at(_hits([19, 21]), np.array([4]), 20)[0] == 0.25
    assert ranking.recall_at(_hits([19, 21]), np.array([4]), 50)[0] == 0.5
    # 30 held back, 20 hits filling the top 20: as good as a top 20 can be.
    assert ranking.recall_at(_hits(list(range(1, 21))), np.array([30]), 20)[0] == 1.0


def test_ndcg_weighs_hits_by_rank_against_the_ideal_ranking() -> None:
    # Hits at ranks 1 and 3 of 2 held back: (1 + 1/log2(4)) / (1 + 1/log2(3)).
    expected = (1 + 1 / 2) / (1 + 1 / math.log2(3))
    assert ranking.ndcg_at(_hits([1, 3]), np.array([2]), 100)[0] == pytest.approx(expected)
    assert ranking.ndcg_at(_hits([1, 2]), np.array([2]), 100)[0] == pytest.approx(1.0)
    # One of 3 found, at rank 100: 1/log2(101) over 1 + 1/log2(3) + 1/2.
    ideal = 1 + 1 / math.log2(3) + 1 / 2
    assert ranking.ndcg_at(_hits([100]), np.array([3]), 100)[0] == pytest.approx(
        1 / math.log2(101) / ideal
    )
    assert ranking.ndcg_at(_hits([]), np.array([3]), 100)[0] == 0.0


def test_fold_in_holds_back_a_fifth_of_each_watchers_likes_the_same_for_a_seed() -> None:
    likes = _likes([list(range(10)), [3, 5, 7, 9, 11], [1, 2, 3, 4], [6]], 12)
    folded, held = likes.fold_in(ranking.HELD_SHARE, seed=7)
    assert [len(_row(held, i)) for i in range(4)] == [2, 1, 0, 0]  # floor(n / 5)
    for i in range(4):
        assert not _row(folded, i) & _row(held, i)
        assert _row(folded, i) | _row(held, i) == _row(likes, i)
    again, held_again = likes.fold_in(ranking.HELD_SHARE, seed=7)
    assert np.array_equal(held.columns, held_again.columns)
    assert np.array_equal(folded.indptr, again.indptr)
    drawn = {tuple(likes.fold_in(ranking.HELD_SHARE, seed=s)[1].columns) for s in range(20)}
    assert len(drawn) > 5  # other seeds hold back other likes


def test_measure_counts_held_back_likes_only_never_folded_in_ones() -> None:
    folded = _likes([[0, 1], [2]], 6)
    held = _likes([[3], [4, 5]], 6)
    # A recommender that puts each watcher's folded-in likes first: they are no hits.
    cheat = ranking.measure(_fixed([[0, 1, 3], [2, 4, 5]]), folded, held)
    assert cheat["recall_at_20"] == 1.0  # the held-back ones still come in the top 20
    first = 1 / math.log2(4)  # watcher 0: its hit at rank 3
    second = (1 / math.log2(3) + 1 / 2) / (1 + 1 / math.log2(3))  # ranks 2, 3 of 2
    assert cheat["ndcg_at_100"] == pytest.approx((first + second) / 2)
    only_folded = ranking.measure(_fixed([[0, 1], [2]]), folded, held)
    assert only_folded["recall_at_20"] == only_folded["ndcg_at_100"] == 0.0


def test_measure_skips_watchers_with_nothing_held_back_and_reports_coverage() -> None:
    folded = _likes([[0], [1], [2]], 10)
    held = _likes([[5], [], [6]], 10)
    found = ranking.measure(_fixed([[5, 7], [8, 9], [3, 6]]), folded, held)
    assert found["recall_at_20"] == 1.0  # watcher 1 (nothing held back) does not count
    assert found["ndcg_at_100"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert found["coverage_at_20"] == pytest.approx(4 / 10)  # 3, 5, 6, 7 (not watcher 1's)
    assert ranking.measure(_fixed([[], [], []]), folded, _likes([[], [], []], 10)) == {}


def test_popularity_ranks_the_most_liked_first_without_folded_in_likes() -> None:
    num_likes = np.array([5, 3, 9, 1, 0, 3])
    folded = _likes([[2], [0], [0, 2, 1]], 6)
    held = _likes([[0], [3], [5]], 6)
    # Rankings: [0, 1, 5, 3, 4] (hit at 1), [2, 1, 5, 3, 4] (hit at 4), [5, 3, 4] (hit at 1);
    # 1 and 5 tie at 3 likes: the lower row first.
    found = ranking.measure(ranking.popularity(num_likes), folded, held)
    assert found["recall_at_20"] == 1.0
    assert found["ndcg_at_100"] == pytest.approx((1 + 1 / math.log2(5) + 1) / 3)
    assert found["coverage_at_20"] == 1.0
    top = ranking.popularity(num_likes)(np.arange(2), folded.dense(np.arange(2)))
    assert [t.tolist() for t in top] == [[0, 1, 5, 3, 4], [2, 1, 5, 3, 4]]


def test_genre_overlap_of_clustered_vectors_and_of_random_pairs() -> None:
    # Movies 0-5 are Drama, 6-11 Comedy, 12-17 Drama|Horror; the vectors cluster by genre set.
    names = [["Drama"]] * 6 + [["Comedy"]] * 6 + [["Drama", "Horror"]] * 6 + [[]]
    genres = ranking.genre_sets(names)
    assert genres.shape == (19, 3) and not genres[18].any()
    rng = np.random.default_rng(0)
    centres = np.eye(3)[[0] * 6 + [1] * 6 + [2] * 6] * 10
    embedding = np.vstack([centres + rng.normal(size=(18, 3)), [[0.0, 0.0, 1.0]]])
    found = ranking.genre_overlap(embedding, genres, seed=0)
    # Each movie's 10 nearest: its 5 cluster mates, then movies of the nearest other cluster.
    assert found["neighbour_genre_overlap"] > 0.5
    # Random pairs among the 18 other movies: a Drama or Drama|Horror movie shares a genre
    # with 11 of them, a Comedy with 5.
    assert found["random_genre_overlap"] == pytest.approx((12 * 11 / 18 + 6 * 5 / 18) / 18)
    assert ranking.genre_overlap(embedding, ranking.genre_sets([[]] * 19), seed=0) == {}
