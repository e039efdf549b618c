"""The vectorised generator draws the notebook's distribution, compactly and reproducibly."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from movie_embeddings_server import config
from movie_embeddings_server.errors import InvalidArgument
from movie_embeddings_server.training import synthetic as data

MOVIES = 80
TYPES = 10
# 200k watchers (20k per type) keeps the per-type age mean's standard error near 0.07 years.
WATCHERS = 200_000
SEED = 12345


@pytest.fixture(scope="module")
def big() -> data.Dataset:
    return data.generate(WATCHERS, MOVIES, TYPES, SEED)


def _in_window(num_movies: int, num_types: int, watcher_type: int) -> np.ndarray:
    """The notebook's rule, written out as a loop: plain abs, not circular distance."""
    return np.array([abs(m % num_types - watcher_type) < 3 for m in range(num_movies)], dtype=bool)


def _notebook_age_mean(watcher_type: int) -> float:
    """E[max(int(N(20 + 5t, 10)), 15)], exactly: int() truncates toward zero."""
    mu, sigma = 20.0 + 5.0 * watcher_type, 10.0

    def cdf(x: float) -> float:
        return 0.5 * (1.0 + math.erf((x - mu) / (sigma * math.sqrt(2.0))))

    # int(x) <= 15 exactly when x < 16 (including every negative x); those become 15.
    total = 15.0 * cdf(16.0)
    for k in range(16, int(mu + 12 * sigma)):
        total += k * (cdf(k + 1.0) - cdf(float(k)))
    return total


def test_exact_age_expectation_matches_a_monte_carlo_of_the_notebook_formula() -> None:
    # Guards the helper above: the notebook's own loop, with Python's random and another seed.
    rnd = random.Random(987)
    for t in (0, 3, 9):
        draws = [max(int(rnd.normalvariate(20 + 5 * t, 10)), 15) for _ in range(100_000)]
        assert abs(sum(draws) / len(draws) - _notebook_age_mean(t)) < 0.15  # ~4.5 SE


def test_shapes_follow_the_sizes() -> None:
    d = data.generate(37, 13, 4, seed=1)
    assert d.types.shape == (37,)
    assert d.ratings.shape == (37, 13)
    assert d.age_years.shape == (37,)
    assert d.education.shape == (37,)


def test_zero_watchers_gives_empty_arrays() -> None:
    d = data.generate(0, 13, 4, seed=1)
    assert d.ratings.shape == (0, 13)
    assert d.types.shape == d.age_years.shape == d.education.shape == (0,)


def test_dtypes_are_compact(big: data.Dataset) -> None:
    # 1 byte per rating; per-watcher attributes at most 4 bytes (int16 overflowed for
    # the num_types the config accepts), small beside num_movies bytes of ratings.
    assert big.ratings.dtype == np.uint8
    assert big.types.dtype.kind == "i" and big.types.dtype.itemsize <= 4
    assert big.age_years.dtype.kind == "i" and big.age_years.dtype.itemsize <= 4
    assert big.education.dtype.kind == "i" and big.education.dtype.itemsize <= 2
    assert set(np.unique(big.ratings).tolist()) == {0, 1}


def test_types_are_in_range_and_roughly_uniform(big: data.Dataset) -> None:
    assert big.types.min() == 0
    assert big.types.max() == TYPES - 1
    counts = np.bincount(big.types, minlength=TYPES)
    assert len(counts) == TYPES
    expected = WATCHERS / TYPES
    # Binomial sd is ~134 per type; 3 % of 20 000 is 600.
    assert np.all(np.abs(counts - expected) < 0.03 * expected), counts


@pytest.mark.parametrize("watcher_type", range(TYPES))
def test_like_rate_inside_and_outside_the_window(big: data.Dataset, watcher_type: int) -> None:
    # 20 000 watchers suffice for the like rates (as small as the notebook's scale allows).
    rows = big.ratings[:20_000][big.types[:20_000] == watcher_type]
    window = _in_window(MOVIES, TYPES, watcher_type)
    assert 0 < window.sum() < MOVIES
    inside = rows[:, window].mean()
    outside = rows[:, ~window].mean()
    assert abs(inside - 0.95) < 0.01, inside
    assert abs(outside - 0.05) < 0.01, outside


def test_window_is_plain_abs_not_circular(big: data.Dataset) -> None:
    # Type 0 and group 9 are 9 apart with abs but 1 apart on a circle: must be "outside".
    rows = big.ratings[big.types == 0]
    group9 = np.arange(MOVIES) % TYPES == 9
    assert abs(rows[:, group9].mean() - 0.05) < 0.01


def test_like_rate_holds_past_the_first_chunk(big: data.Dataset) -> None:
    # The generator draws in chunks of rows; the tail after the first chunk must be drawn too.
    start = data._CHUNK_CELLS // MOVIES
    assert start < WATCHERS
    tail_types = big.types[start:]
    tail = big.ratings[start:]
    probs = data.like_probability(tail_types, MOVIES, TYPES)
    assert abs(tail[probs > 0.5].mean() - 0.95) < 0.01
    assert abs(tail[probs < 0.5].mean() - 0.05) < 0.01


def test_ages_are_at_least_15(big: data.Dataset) -> None:
    assert big.age_years.min() == 15  # clipped, and the clip is hit (type 0 has mean 20)


def test_ages_are_whole_years_centered_on_20_plus_5_type(big: data.Dataset) -> None:
    for t in range(TYPES):
        ages = big.age_years[big.types == t].astype(np.float64)
        expected = _notebook_age_mean(t)
        assert abs(ages.mean() - expected) < 0.3, (t, ages.mean(), expected)
        assert abs(ages.mean() - (20 + 5 * t)) < 2.5  # the clip moves low types up a little


def test_overall_age_mean_reflects_truncation_not_rounding(big: data.Dataset) -> None:
    counts = np.bincount(big.types, minlength=TYPES)
    expected = sum(counts[t] * _notebook_age_mean(t) for t in range(TYPES)) / WATCHERS
    # Rounding instead of truncating would move the mean by ~0.45 years; the SE here is ~0.03.
    assert abs(big.age_years.mean() - expected) < 0.15


@pytest.mark.parametrize("watcher_type", range(TYPES))
def test_education_range_per_type(big: data.Dataset, watcher_type: int) -> None:
    edu = big.education[big.types == watcher_type]
    low = watcher_type % 2
    high = watcher_type % 5 + watcher_type % 2
    assert edu.min() >= low
    assert edu.max() <= high
    assert set(np.unique(edu).tolist()) == set(range(low, high + 1))


def test_same_seed_gives_identical_arrays() -> None:
    a = data.generate(500, 20, 5, seed=7)
    b = data.generate(500, 20, 5, seed=7)
    for name in ("types", "ratings", "age_years", "education"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_seed_zero_is_a_seed() -> None:
    a = data.generate(500, 20, 5, seed=0)
    b = data.generate(500, 20, 5, seed=0)
    np.testing.assert_array_equal(a.ratings, b.ratings)


def test_different_seed_gives_different_arrays() -> None:
    a = data.generate(500, 20, 5, seed=7)
    b = data.generate(500, 20, 5, seed=8)
    assert not np.array_equal(a.types, b.types)
    assert not np.array_equal(a.ratings, b.ratings)
    assert not np.array_equal(a.age_years, b.age_years)


def test_like_probability_values() -> None:
    types = np.array([0, 2, 5, 9], dtype=np.int16)
    probs = data.like_probability(types, 23, 10)
    assert probs.shape == (4, 23)
    assert probs.dtype == np.float32
    for i, t in enumerate(types.tolist()):
        for m in range(23):
            expected = 0.95 if abs(m % 10 - t) < 3 else 0.05
            assert probs[i, m] == pytest.approx(expected), (t, m)


def test_like_probability_boundaries() -> None:
    probs = data.like_probability(np.array([4], dtype=np.int16), 10, 10)[0]
    # |g - 4| < 3  <=>  g in {2, ..., 6}
    np.testing.assert_allclose(
        probs, [0.05, 0.05, 0.95, 0.95, 0.95, 0.95, 0.95, 0.05, 0.05, 0.05], rtol=1e-6
    )


@pytest.mark.parametrize("num_types", [7_000, 40_000])
def test_every_accepted_size_keeps_types_and_ages_valid(num_types: int) -> None:
    # Either the server refuses so many types, or the generator's compact dtypes hold them
    # (and the ages 20 + 5 * type they imply) without wrapping around.
    given = {"num_watchers": 50, "num_movies": num_types, "num_types": num_types, "seed": 1}
    try:
        spec = config.resolve_synthetic(given)
    except InvalidArgument as exc:
        assert exc.field == "synthetic.num_types"
        return
    d = data.generate(spec.num_watchers, spec.num_movies, spec.num_types, spec.seed)
    types = d.types.astype(np.int64)
    assert types.min() >= 0
    assert types.max() < num_types
    assert d.age_years.min() >= 15
    expected_mean = 20 + 5 * types.mean()
    assert abs(d.age_years.astype(np.float64).mean() - expected_mean) < 5  # 50 draws, sd 10
    low = types % 2
    assert np.all(d.education >= low)
    assert np.all(d.education <= types % 5 + low)


# Mutation testing runs, per change to the generator, only the tests that call it: the shared
# `big` draw is made once, in the first of its tests. These draws of their own check the
# distribution in every run.


def test_a_fresh_draw_has_the_notebooks_types_and_ages() -> None:
    d = data.generate(100_000, 1, TYPES, seed=99)
    assert (d.types.min(), d.types.max()) == (0, TYPES - 1)
    for t in range(TYPES):
        ages = d.age_years[d.types == t].astype(np.float64)
        assert abs(ages.mean() - _notebook_age_mean(t)) < 0.5, t  # SE ~0.1
    # Past type 5 the clip at 15 is 3.5 sd away: age - 5 * type is int(N(20, 10)).
    old = d.types >= 6
    shifted = d.age_years[old].astype(np.float64) - 5.0 * d.types[old]
    assert abs(shifted.std() - 10.0) < 0.3  # SE ~0.04


def test_every_chunk_of_a_parallel_draw_has_the_notebooks_like_rates() -> None:
    # 2,500 x 2,000 cells: two chunks (2,000 and 500 watchers), filled by two threads.
    d = data.generate(2500, 2000, TYPES, seed=5)
    near = data.like_probability(d.types, 2000, TYPES) > 0.5
    for rows in (slice(0, 2000), slice(2000, 2500)):
        liked = d.ratings[rows] == 1
        assert abs(liked[near[rows]].mean() - data.LIKE_INSIDE) < 0.01
        assert abs(liked[~near[rows]].mean() - data.LIKE_OUTSIDE) < 0.01
