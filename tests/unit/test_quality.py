"""Quality metrics on hand-made inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from movie_embeddings_server import quality
from movie_embeddings_server.inference import ServedModel

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
