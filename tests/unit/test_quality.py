"""Quality metrics on hand-made inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from movie_embeddings_server.model.inference import ServedModel, Watchers
from movie_embeddings_server.training import quality
from movie_embeddings_server.training import synthetic as data

BAYES = -(0.95 * math.log(0.95) + 0.05 * math.log(0.05))  # H(0.95) = 0.1985 nats


def _grouped(num_movies: int, num_types: int, noise: float, seed: int = 0) -> np.ndarray:
    """Movie m's vector = its group's direction (one-hot of m % types) plus noise."""
    rng = np.random.default_rng(seed)
    base = np.eye(num_types)[np.arange(num_movies) % num_types]
    return base + noise * rng.normal(size=base.shape)


def test_purity_is_one_when_groups_are_separate() -> None:
    assert quality.neighbour_purity(_grouped(80, 10, noise=0.01), 10) == 1.0


def test_purity_counts_the_share_of_same_group_neighbours() -> None:
    # 4 movies, 2 groups (m % 2): k = 4/2 - 1 = 1 neighbour each.
    matrix = np.array([[1.0, 0.0], [0.9, 0.1], [1.0, 0.01], [0.0, 1.0]])
    # Nearest by cosine: 0 -> 2 (same group), 1 -> 2 (other), 2 -> 0 (same), 3 -> 1 (same).
    assert quality.neighbour_purity(matrix, 2) == pytest.approx(3 / 4)


def test_purity_of_random_vectors_is_near_chance() -> None:
    rng = np.random.default_rng(1)
    purities = [quality.neighbour_purity(rng.normal(size=(80, 5)), 10) for _ in range(20)]
    chance = 7 / 79  # of the 79 other movies, 7 share a group
    assert np.mean(purities) == pytest.approx(chance, abs=0.03)


def test_cross_entropy_of_known_probabilities() -> None:
    p = np.array([[0.95, 0.05]])
    q = np.array([[0.5, 0.5]])
    assert quality.cross_entropy(p, q) == pytest.approx(math.log(2))
    expected = -(0.95 * math.log(0.9) + 0.05 * math.log(0.1))
    assert quality.cross_entropy(np.array([0.95]), np.array([0.9])) == pytest.approx(expected)


def test_cross_entropy_is_least_at_the_true_probabilities() -> None:
    p = np.array([0.95, 0.05, 0.95])
    bayes = quality.binary_entropy(p)
    assert quality.cross_entropy(p, p) == pytest.approx(bayes)
    assert quality.cross_entropy(p, np.array([0.9, 0.1, 0.9])) > bayes
    assert bayes == pytest.approx(BAYES)
    assert abs(BAYES - 0.19851524) < 1e-8  # H(0.95)


def test_cross_entropy_clips_certain_wrong_predictions() -> None:
    value = quality.cross_entropy(np.array([1.0]), np.array([0.0]))
    assert value == pytest.approx(-math.log(quality.EPSILON))


def test_evaluate_a_model_that_knows_nothing() -> None:
    # A model whose output is 0.5 everywhere: all-zero weights, so sigmoid(0) = 0.5.
    weights = {
        "embedding": np.zeros((20, 2)),
        "hidden_kernel": np.zeros((4, 3)),
        "hidden_bias": np.zeros(3),
        "output_kernel": np.zeros((3, 20)),
        "output_bias": np.zeros(20),
    }
    model = ServedModel("m", 1, weights, {"age_mean": 40.0, "age_std": 10.0})
    metrics = quality.evaluate(model, num_types=4, seed=3)
    assert metrics["heldout_cross_entropy"] == pytest.approx(math.log(2), rel=1e-6)
    assert metrics["bayes_cross_entropy"] == pytest.approx(BAYES)
    assert metrics["cross_entropy_ratio"] == pytest.approx(math.log(2) / BAYES)
    # All vectors zero: every cosine is 0 and ties go to the lowest ids, so each movie's
    # k = 4 neighbours are the first ids but itself: movie 0 gets 1/4 of its group, 1..3
    # none, and 4..19 one of 0..3 each (1/4).
    assert metrics["neighbour_purity"] == pytest.approx((0.25 + 16 * 0.25) / 20)


def test_purity_needs_at_least_one_neighbour_per_movie() -> None:
    assert math.isnan(quality.neighbour_purity(np.eye(3), 2))  # k = 3 // 2 - 1 = 0


def _shares(matrix: np.ndarray, num_types: int) -> np.ndarray:
    """Each movie's share of same-group movies among its k cosine-nearest, by brute force."""
    n = len(matrix)
    k = n // num_types - 1
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    shares = []
    for m in range(n):
        cosines = unit @ unit[m]
        others = sorted((i for i in range(n) if i != m), key=lambda i: (-cosines[i], i))
        shares.append(np.mean([i % num_types == m % num_types for i in others[:k]]))
    return np.array(shares)


def test_purity_of_a_large_catalogue_averages_the_movies_drawn_with_the_seed() -> None:
    matrix = _grouped(300, 3, noise=0.8, seed=4)
    shares = _shares(matrix, 3)
    for seed in (0, 7):
        drawn = np.random.default_rng(seed).choice(300, quality.PURITY_QUERIES, replace=False)
        expected = np.mean(shares[drawn])
        assert quality.neighbour_purity(matrix, 3, seed) == pytest.approx(expected, abs=1e-12)
    assert quality.neighbour_purity(matrix, 3, 0) != quality.neighbour_purity(matrix, 3, 7)


def test_cross_entropy_clips_certain_predictions_on_both_sides() -> None:
    for p, q in ((1.0, 0.0), (0.0, 1.0)):
        value = quality.cross_entropy(np.array([p]), np.array([q]))
        assert value == pytest.approx(-math.log(quality.EPSILON), rel=1e-6)


def _random_model(movies: int, seed: int = 0) -> ServedModel:
    rng = np.random.default_rng(seed)
    weights = {
        "embedding": rng.normal(size=(movies, 2)),
        "hidden_kernel": rng.normal(size=(4, 3)),
        "hidden_bias": rng.normal(size=3),
        "output_kernel": rng.normal(size=(3, movies)),
        "output_bias": rng.normal(size=movies),
    }
    return ServedModel("m", 1, weights, {"age_mean": 40.0, "age_std": 10.0})


def test_evaluate_scores_fresh_watchers_of_the_seeds_own_stream() -> None:
    model = _random_model(20)
    metrics = quality.evaluate(model, num_types=4, seed=3)
    fresh = data.generate(quality.HELDOUT_WATCHERS, 20, 4, [3, 1, 0])
    watchers = Watchers(fresh.ratings.astype(np.float32), fresh.age_years, fresh.education)
    p_true = data.like_probability(fresh.types, 20, 4)
    heldout = quality.cross_entropy(p_true, model.forward(watchers))
    assert metrics["heldout_cross_entropy"] == pytest.approx(heldout, rel=1e-9)
    assert metrics["neighbour_purity"] == quality.neighbour_purity(model.embedding, 4, 3)


def test_evaluate_weighs_each_chunk_of_a_large_catalogue_by_its_watchers() -> None:
    # 2,500 movies: chunks of 1,600 then 400 watchers; a model that knows nothing scores
    # log 2 on each, and every watcher's Bayes bound is H(0.95).
    movies = 2500
    assert quality.CHUNK_CELLS // movies < quality.HELDOUT_WATCHERS
    zero = {
        "embedding": np.zeros((movies, 2)),
        "hidden_kernel": np.zeros((4, 3)),
        "hidden_bias": np.zeros(3),
        "output_kernel": np.zeros((3, movies)),
        "output_bias": np.zeros(movies),
    }
    model = ServedModel("m", 1, zero, {"age_mean": 40.0, "age_std": 10.0})
    metrics = quality.evaluate(model, num_types=4, seed=3)
    assert metrics["heldout_cross_entropy"] == pytest.approx(math.log(2), rel=1e-6)
    assert metrics["bayes_cross_entropy"] == pytest.approx(BAYES, rel=1e-6)
    assert metrics["neighbour_purity"] == quality.neighbour_purity(model.embedding, 4, 3)
