"""A served version answers vectors, neighbours and reconstructions from numpy, bounds checked."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from movie_embeddings_server import errors
from movie_embeddings_server.model import inference
from movie_embeddings_server.model.catalogue import Catalogue
from movie_embeddings_server.model.inference import ServedModel, Watchers

MOVIES = 12
DIM = 4
HIDDEN = 6
META = {"age_mean": 37.5, "age_std": 12.0}
NONE = np.array([], dtype=np.int64)


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "embedding": rng.normal(size=(MOVIES, DIM)).astype(np.float32),
        "hidden_kernel": rng.normal(0, 0.5, size=(2 + DIM, HIDDEN)).astype(np.float32),
        "hidden_bias": rng.normal(0, 0.1, size=HIDDEN).astype(np.float32),
        "output_kernel": rng.normal(0, 0.5, size=(HIDDEN, MOVIES)).astype(np.float32),
        "output_bias": rng.normal(0, 0.1, size=MOVIES).astype(np.float32),
    }


@pytest.fixture
def weights() -> dict[str, np.ndarray]:
    return _weights()


@pytest.fixture
def model(weights: dict[str, np.ndarray]) -> ServedModel:
    return ServedModel("default", 3, weights, dict(META))


def _reference_forward(w: dict[str, np.ndarray], ratings, ages, education) -> np.ndarray:
    """The notebook's layers in float64, from raw ages standardised with the stored statistics."""
    ratings = np.asarray(ratings, np.float64)
    age = (np.asarray(ages, np.float64) - META["age_mean"]) / META["age_std"]
    features = np.column_stack([age, np.asarray(education, np.float64)])
    merged = np.concatenate([features, ratings @ w["embedding"].astype(np.float64)], axis=1)
    hidden = np.maximum(merged @ w["hidden_kernel"] + w["hidden_bias"], 0)
    return 1 / (1 + np.exp(-(hidden @ w["output_kernel"] + w["output_bias"])))


METRICS = ("cosine", "dot", "euclidean")


def _nearest(model: ServedModel, **kwargs):
    args = {"movie_id": None, "vector": None, "k": 5, "metric": "cosine", "exclude": NONE}
    args.update(kwargs)
    ids, scores = model.nearest(**args)
    return np.asarray(ids, dtype=np.int64), np.asarray(scores)


# --- vectors ------------------------------------------------------------------------------


def test_sizes(model: ServedModel) -> None:
    assert model.num_movies == MOVIES
    assert model.embedding_dim == DIM
    assert (model.name, model.version) == ("default", 3)
    assert model.age_mean == 37.5 and model.age_std == 12.0


def test_vectors_of_no_ids_are_all_rows(model: ServedModel, weights) -> None:
    rows, got = model.vectors(NONE)
    np.testing.assert_array_equal(rows, np.arange(MOVIES))
    assert got.shape == (MOVIES, DIM)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, weights["embedding"])


def test_vectors_of_ids_are_those_rows_in_order(model: ServedModel, weights) -> None:
    rows, got = model.vectors(np.array([5, 0, 5, MOVIES - 1]))
    np.testing.assert_array_equal(rows, [5, 0, 5, MOVIES - 1])
    np.testing.assert_array_equal(got, weights["embedding"][[5, 0, 5, MOVIES - 1]])


def test_vectors_negative_id_is_invalid(model: ServedModel) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        model.vectors(np.array([1, -1]))
    assert exc.value.field == "movie_ids"
    with pytest.raises(errors.InvalidArgument) as exc:
        model.vectors(np.array([-3]), field="movie_id")
    assert exc.value.field == "movie_id"


def test_vectors_id_past_the_catalogue_is_not_found(model: ServedModel) -> None:
    with pytest.raises(errors.NotFound, match=str(MOVIES)):
        model.vectors(np.array([0, MOVIES]))


# --- nearest ------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_nearest_by_movie_matches_brute_force(model: ServedModel, weights, metric: str) -> None:
    emb = weights["embedding"].astype(np.float64)
    query_id = 4
    q = emb[query_id]
    if metric == "cosine":
        brute = emb @ q / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    elif metric == "dot":
        brute = emb @ q
    else:
        brute = -np.linalg.norm(emb - q, axis=1)
    expected = [int(i) for i in np.argsort(-brute, kind="stable") if i != query_id][:5]
    ids, scores = _nearest(model, movie_id=query_id, metric=metric)
    assert ids.tolist() == expected
    np.testing.assert_allclose(scores, brute[expected], rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores) <= 0)


@pytest.mark.parametrize("metric", METRICS)
def test_query_movie_is_never_its_own_neighbour(model: ServedModel, metric: str) -> None:
    for movie in range(MOVIES):
        ids, _ = _nearest(model, movie_id=movie, k=MOVIES, metric=metric)
        assert movie not in ids.tolist()
        assert len(ids) == MOVIES - 1


def test_query_movie_is_excluded_even_with_duplicate_rows(weights) -> None:
    weights["embedding"][7] = weights["embedding"][2]
    model = ServedModel("m", 1, weights, META)
    ids, scores = _nearest(model, movie_id=2, k=1)
    assert ids.tolist() == [7]
    assert scores[0] == pytest.approx(1.0, abs=1e-6)


def test_nearest_k_bounds(model: ServedModel) -> None:
    assert len(_nearest(model, movie_id=0, k=0)[0]) == 0
    assert len(_nearest(model, movie_id=0, k=1)[0]) == 1
    assert len(_nearest(model, movie_id=0, k=1000)[0]) == MOVIES - 1
    vector = np.ones(DIM, np.float32)
    assert len(_nearest(model, vector=vector, k=1000)[0]) == MOVIES


def test_nearest_exclude(model: ServedModel) -> None:
    full, _ = _nearest(model, movie_id=0, k=MOVIES)
    excluded = full[:3]
    ids, _ = _nearest(model, movie_id=0, k=MOVIES, exclude=excluded)
    assert not set(ids.tolist()) & set(excluded.tolist())
    assert ids.tolist() == full[3:].tolist()


def test_nearest_by_vector_finds_that_movie_first(model: ServedModel, weights) -> None:
    for metric in METRICS:
        if metric == "dot":
            continue  # a longer row can out-score the row itself by dot product
        ids, _ = _nearest(model, vector=weights["embedding"][6].copy(), k=3, metric=metric)
        assert ids[0] == 6


def test_nearest_by_zero_vector_is_fine_with_dot_and_euclidean(model: ServedModel) -> None:
    zero = np.zeros(DIM, np.float32)
    ids, scores = _nearest(model, vector=zero, k=3, metric="dot")
    assert ids.tolist() == [0, 1, 2] and np.all(scores == 0)
    ids, _ = _nearest(model, vector=zero, k=3, metric="euclidean")
    assert len(ids) == 3


def test_negative_k_is_invalid(model: ServedModel) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        _nearest(model, movie_id=0, k=-1)
    assert exc.value.field == "k"


def test_nearest_negative_movie_is_invalid(model: ServedModel) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        _nearest(model, movie_id=-1)
    assert exc.value.field == "movie_id"


def test_nearest_unknown_movie_is_not_found(model: ServedModel) -> None:
    with pytest.raises(errors.NotFound):
        _nearest(model, movie_id=MOVIES)


def test_nearest_bad_exclude_ids(model: ServedModel) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        _nearest(model, movie_id=0, exclude=np.array([-2]))
    assert exc.value.field == "exclude_movie_ids"
    with pytest.raises(errors.NotFound):
        _nearest(model, movie_id=0, exclude=np.array([MOVIES + 5]))


@pytest.mark.parametrize(
    ("vector", "metric"),
    [
        (np.ones(DIM - 1, np.float32), "cosine"),
        (np.ones(DIM + 1, np.float32), "dot"),
        (np.ones((1, DIM), np.float32), "euclidean"),
        (np.array([1, np.nan, 0, 0], np.float32), "dot"),
        (np.array([1, np.inf, 0, 0], np.float32), "euclidean"),
        (np.zeros(DIM, np.float32), "cosine"),
    ],
)
def test_bad_query_vectors_are_invalid(model: ServedModel, vector, metric: str) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        _nearest(model, vector=vector, metric=metric)
    assert exc.value.field == "vector.values"


def test_exactly_one_query(model: ServedModel) -> None:
    with pytest.raises(errors.InvalidArgument):
        _nearest(model)
    with pytest.raises(errors.InvalidArgument):
        _nearest(model, movie_id=1, vector=np.ones(DIM, np.float32))


def test_movie_zero_is_a_query(model: ServedModel) -> None:
    ids, _ = _nearest(model, movie_id=0, k=MOVIES)
    assert 0 not in ids.tolist()


def test_cosine_neighbours_of_a_movie_with_a_zero_vector(weights) -> None:
    # A default-preset (zero-initialised) model keeps a zero row for every movie that no
    # training watcher liked. A zero vector has no direction: its cosine with every movie is
    # 0 (never NaN), so its neighbours are the lowest other ids.
    weights["embedding"][2] = 0
    model = ServedModel("m", 1, weights, META)
    ids, scores = _nearest(model, movie_id=2, k=3)
    assert ids.tolist() == [0, 1, 3]
    assert scores.tolist() == [0.0, 0.0, 0.0]


def test_zero_rows_score_zero_by_cosine(weights) -> None:
    weights["embedding"][5] = 0
    model = ServedModel("m", 1, weights, META)
    ids, scores = _nearest(model, movie_id=0, k=MOVIES)
    assert np.all(np.isfinite(scores))
    assert scores[ids.tolist().index(5)] == 0


# --- watchers -----------------------------------------------------------------------------


def test_liked_ids_give_the_same_matrix_as_ratings(model: ServedModel) -> None:
    ratings = np.zeros((2, MOVIES), np.float32)
    ratings[0, [1, 4, 9]] = 1
    ratings[1, [0]] = 1
    by_ratings = model.make_watchers(ratings.tolist(), [[], []], [30.0, 60.0], [1, 2])
    by_ids = model.make_watchers([[], []], [[1, 4, 9], [0]], [30.0, 60.0], [1, 2])
    np.testing.assert_array_equal(by_ratings.ratings, by_ids.ratings)
    np.testing.assert_array_equal(by_ids.ratings, ratings)
    np.testing.assert_array_equal(by_ids.age_years, [30.0, 60.0])
    np.testing.assert_array_equal(by_ids.education, [1, 2])
    np.testing.assert_array_equal(model.forward(by_ratings), model.forward(by_ids))


def test_watchers_may_mix_ratings_and_liked_ids(model: ServedModel) -> None:
    row = [0.25] * MOVIES
    w = model.make_watchers([row, []], [[], [3]], [20.0, 20.0], [0, 0])
    np.testing.assert_array_equal(w.ratings[0], row)
    assert w.ratings[1].tolist() == [1.0 if m == 3 else 0.0 for m in range(MOVIES)]


def test_a_watcher_with_no_likes_is_a_zero_row(model: ServedModel) -> None:
    w = model.make_watchers([[]], [[]], [20.0], [0])
    np.testing.assert_array_equal(w.ratings, np.zeros((1, MOVIES)))


def test_both_ratings_and_liked_ids_is_invalid(model: ServedModel) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        model.make_watchers([[], [0.0] * MOVIES], [[], [1]], [20.0, 20.0], [0, 0])
    assert exc.value.field == "watchers[1]"


@pytest.mark.parametrize("length", [1, MOVIES - 1, MOVIES + 1])
def test_wrong_rating_length_is_invalid(model: ServedModel, length: int) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        model.make_watchers([[0.5] * length], [[]], [20.0], [0])
    assert exc.value.field == "watchers[0].ratings"
    assert str(MOVIES) in exc.value.description


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf")])
def test_ratings_outside_0_1_are_invalid(model: ServedModel, bad: float) -> None:
    good = [0.5] * MOVIES
    row = list(good)
    row[7] = bad
    with pytest.raises(errors.InvalidArgument) as exc:
        model.make_watchers([good, good, row], [[], [], []], [20.0] * 3, [0] * 3)
    assert exc.value.field == "watchers[2].ratings"


def test_ratings_at_the_bounds_are_fine(model: ServedModel) -> None:
    row = [0.0] * (MOVIES - 1) + [1.0]
    model.make_watchers([row], [[]], [0.0], [0])
    model.make_watchers([row], [[]], [150.0], [0])


@pytest.mark.parametrize("bad", [-0.01, 1.01])
def test_a_bad_rating_is_named_past_watchers_at_the_bounds(model: ServedModel, bad: float) -> None:
    bounds = [0.0] * (MOVIES - 1) + [1.0]
    row = [0.5] * MOVIES
    row[3] = bad
    with pytest.raises(errors.InvalidArgument) as exc:
        model.make_watchers([bounds, bounds, row], [[], [], []], [20.0] * 3, [0] * 3)
    assert exc.value.field == "watchers[2].ratings"


@pytest.mark.parametrize("age", [-1.0, 150.5, float("nan"), float("inf")])
def test_age_outside_0_150_is_invalid(model: ServedModel, age: float) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        model.make_watchers([[], []], [[1], [2]], [30.0, age], [0, 0])
    assert exc.value.field == "watchers[1].age_years"


def test_negative_education_is_invalid(model: ServedModel) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        model.make_watchers([[], []], [[1], [2]], [30.0, 30.0], [0, -1])
    assert exc.value.field == "watchers[1].education"


def test_no_watchers_is_invalid(model: ServedModel) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        model.make_watchers([], [], [], [])
    assert exc.value.field == "watchers"


def test_liked_ids_are_checked(model: ServedModel) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        model.make_watchers([[]], [[-1]], [30.0], [0])
    assert exc.value.field == "watchers[0].liked_movie_ids"
    with pytest.raises(errors.NotFound):
        model.make_watchers([[]], [[MOVIES]], [30.0], [0])


# --- forward and reconstruct --------------------------------------------------------------


def test_forward_standardises_raw_ages(model: ServedModel, weights) -> None:
    rng = np.random.default_rng(5)
    ratings = rng.random((20, MOVIES), dtype=np.float32)
    ages = rng.uniform(15, 90, 20).astype(np.float32)
    education = rng.integers(0, 6, 20)
    got = model.forward(Watchers(ratings, ages, education))
    expected = _reference_forward(weights, ratings, ages, education)
    assert got.shape == (20, MOVIES) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_forward_depends_on_age_and_education(model: ServedModel) -> None:
    ratings = np.full((1, MOVIES), 0.5, np.float32)
    base = model.forward(Watchers(ratings, np.array([30.0], np.float32), np.array([1])))
    older = model.forward(Watchers(ratings, np.array([70.0], np.float32), np.array([1])))
    schooled = model.forward(Watchers(ratings, np.array([30.0], np.float32), np.array([4])))
    assert not np.allclose(base, older)
    assert not np.allclose(base, schooled)


def test_reconstruct_probabilities_and_recommendations(model: ServedModel, weights) -> None:
    ratings = np.zeros((3, MOVIES), np.float32)
    ratings[0, [0, 1, 2]] = 1
    ratings[1, 5] = 0.7  # >= 0.5 counts as liked
    ratings[1, 6] = 0.3  # < 0.5 does not
    w = Watchers(ratings, np.array([20.0, 45.0, 80.0], np.float32), np.array([0, 2, 5]))
    probabilities, recommendations = model.reconstruct(w, top_k=4)
    np.testing.assert_allclose(
        probabilities, _reference_forward(weights, ratings, w.age_years, w.education), atol=1e-6
    )
    assert len(recommendations) == 3
    liked = [{0, 1, 2}, {5}, set()]
    for row, recs, likes in zip(probabilities, recommendations, liked, strict=True):
        assert len(recs) == 4
        assert not set(recs.tolist()) & likes
        assert np.all(np.diff(row[recs]) <= 0)
        best_unliked = sorted(set(range(MOVIES)) - likes, key=lambda m: (-row[m], m))[:4]
        assert recs.tolist() == best_unliked


@pytest.mark.parametrize("path", ["watchers", "batch"])
def test_a_rating_of_exactly_one_half_is_liked_and_never_recommended(
    model: ServedModel, path: str
) -> None:
    row = np.zeros(MOVIES, np.float32)
    row[[2, 8]] = 0.5  # liked
    row[[3, 9]] = np.nextafter(np.float32(0.5), np.float32(0))  # just under: not liked
    if path == "watchers":
        w = model.make_watchers([row.tolist()], [[]], [40.0], [1])
    else:
        w = model.dense_watchers(row, np.array([40.0], np.float32), np.array([1]))
    _, (recommended,) = model.reconstruct(w, top_k=MOVIES)
    assert sorted(recommended.tolist()) == [m for m in range(MOVIES) if m not in (2, 8)]


@pytest.mark.parametrize("age", [-0.5, 150.5, float("nan"), float("inf")])
def test_batch_age_outside_0_150_is_invalid(model: ServedModel, age: float) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        model.dense_watchers(
            np.zeros(3 * MOVIES, np.float32), np.array([30.0, 0.0, age], np.float32), np.zeros(3)
        )
    assert exc.value.field == "batch.age_years[2]"
    assert "[0, 150]" in exc.value.description


def test_reconstruct_top_k_past_the_unliked_movies(model: ServedModel) -> None:
    w = model.make_watchers([[]], [list(range(MOVIES - 2))], [30.0], [1])
    _, recommendations = model.reconstruct(w, top_k=10)
    assert sorted(recommendations[0].tolist()) == [MOVIES - 2, MOVIES - 1]


def test_reconstruct_without_top_k_has_no_recommendations(model: ServedModel) -> None:
    w = model.make_watchers([[]], [[1]], [30.0], [1])
    probabilities, recommendations = model.reconstruct(w, top_k=0)
    assert probabilities.shape == (1, MOVIES)
    assert all(len(r) == 0 for r in recommendations)


def test_reconstruct_negative_top_k_is_invalid(model: ServedModel) -> None:
    w = model.make_watchers([[]], [[1]], [30.0], [1])
    with pytest.raises(errors.InvalidArgument) as exc:
        model.reconstruct(w, top_k=-1)
    assert exc.value.field == "top_k"


def test_weights_are_copied_to_float32(weights) -> None:
    as64 = {k: v.astype(np.float64) for k, v in weights.items()}
    model = ServedModel("m", 1, as64, META)
    for name in ("embedding", "unit", "input_to_hidden", "negated_output"):
        assert getattr(model, name).dtype == np.float32


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_the_ranking_table_answers_as_a_search_does(metric: str) -> None:
    """Queries by movie id read a precomputed table; queries by vector search. Both agree."""
    rng = np.random.default_rng(11)
    weights = {
        "embedding": rng.normal(size=(60, 4)),
        "hidden_kernel": rng.normal(size=(6, 3)),
        "hidden_bias": np.zeros(3),
        "output_kernel": rng.normal(size=(3, 60)),
        "output_bias": np.zeros(60),
    }
    model = ServedModel("m", 1, weights, {"age_mean": 40.0, "age_std": 10.0})
    for movie_id in range(60):
        exclude = rng.choice(60, 5, replace=False)
        by_id = model.nearest(movie_id=movie_id, vector=None, k=20, metric=metric, exclude=exclude)
        by_vector = model.nearest(
            movie_id=None,
            vector=model.embedding[movie_id],
            k=20,
            metric=metric,
            exclude=np.append(exclude, movie_id),
        )
        assert by_id[0] == by_vector[0]
        np.testing.assert_allclose(by_id[1], by_vector[1], rtol=1e-5, atol=1e-6)
        if metric == "cosine":  # both in float32 (no float64 query): the very same numbers
            assert by_id[1] == by_vector[1]


# --- every refusal names its field and says why -------------------------------------------

GOOD = [0.5] * MOVIES


@pytest.mark.parametrize(
    ("call", "field", "description"),
    [
        (lambda m: _nearest(m, movie_id=0, k=-2), "k", "must be >= 0, got -2"),
        (lambda m: _nearest(m), "query", "set exactly one of movie_id or vector"),
        (
            lambda m: _nearest(m, movie_id=1, vector=np.ones(DIM, np.float32)),
            "query",
            "set exactly one of movie_id or vector",
        ),
        (
            lambda m: _nearest(m, vector=np.ones(DIM + 1, np.float32)),
            "vector.values",
            f"must have {DIM} values, got {DIM + 1}",
        ),
        (
            lambda m: _nearest(m, vector=np.array([1, np.nan, 0, 0], np.float32)),
            "vector.values",
            "must be finite (no NaN or Inf)",
        ),
        (
            lambda m: _nearest(m, vector=np.zeros(DIM, np.float32)),
            "vector.values",
            "must not be all zero with the cosine metric",
        ),
        (lambda m: m.make_watchers([], [], [], []), "watchers", "must hold at least one watcher"),
        (
            lambda m: m.make_watchers([GOOD, [*GOOD[:-1], 1.5]], [[], []], [9.0] * 2, [0] * 2),
            "watchers[1].ratings",
            "must be finite and in [0, 1]",
        ),
        (
            lambda m: m.make_watchers([GOOD[:3]], [[]], [9.0], [0]),
            "watchers[0].ratings",
            f"must have {MOVIES} values (one per movie), got 3",
        ),
        (
            lambda m: m.make_watchers([[]], [[1]], [150.5], [0]),
            "watchers[0].age_years",
            "must be finite and in [0, 150], got 150.5",
        ),
        (
            lambda m: m.make_watchers([[], []], [[1], [1]], [9.0] * 2, [0, -2]),
            "watchers[1].education",
            "must be >= 0, got -2",
        ),
        (
            lambda m: m.make_watchers([GOOD], [[1]], [9.0], [0]),
            "watchers[0]",
            "set ratings or liked_movie_ids, not both",
        ),
        (
            lambda m: m.dense_watchers(np.zeros(0, np.float32), np.zeros(0), np.zeros(0)),
            "batch.age_years",
            "must hold one age per watcher (>= 1)",
        ),
        (
            lambda m: m.dense_watchers(np.zeros(2 * MOVIES, np.float32), np.zeros(2), np.zeros(3)),
            "batch.education",
            "must have 2 values (one per watcher), got 3",
        ),
        (
            lambda m: m.dense_watchers(np.zeros(2 * MOVIES - 1, np.float32), np.zeros(2), [0, 0]),
            "batch.ratings",
            f"must hold 2 x {MOVIES} float32 values, got {2 * MOVIES - 1}",
        ),
        (
            lambda m: m.dense_watchers(
                np.array([0.5] * MOVIES + [0.5] * (MOVIES - 1) + [-1], np.float32),
                np.zeros(2),
                np.zeros(2),
            ),
            "batch.ratings[1]",
            "must be finite and in [0, 1]",
        ),
        (
            lambda m: m.dense_watchers(
                np.zeros(3 * MOVIES, np.float32), np.zeros(3), np.array([0, 1, -4])
            ),
            "batch.education[2]",
            "must be >= 0, got -4",
        ),
        (
            lambda m: m.reconstruct(m.make_watchers([[]], [[]], [9.0], [0]), -1),
            "top_k",
            "must be >= 0, got -1",
        ),
    ],
)
def test_every_refusal_names_its_field_and_bound(
    model: ServedModel, call, field, description
) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        call(model)
    assert (exc.value.field, exc.value.description) == (field, description)


def test_batch_bounds_are_inclusive(model: ServedModel) -> None:
    ages = np.array([0.0, 150.0], np.float32)
    watchers = model.dense_watchers(np.ones(2 * MOVIES, np.float32), ages, np.array([0, 0]))
    assert watchers.ratings.shape == (2, MOVIES)


def test_an_unknown_movie_names_the_model_version(model: ServedModel) -> None:
    with pytest.raises(errors.NotFound) as exc:
        _nearest(model, movie_id=MOVIES)
    assert f"is not in model default v3 (movie ids are 0..{MOVIES - 1})" in str(exc.value)


def test_made_watchers_are_float32(model: ServedModel) -> None:
    w = model.make_watchers([GOOD, []], [[], [2]], [30, 40], [1, 2])
    assert (w.ratings.dtype, w.age_years.dtype) == (np.float32, np.float32)


@pytest.mark.parametrize("absent", ["has_age", "has_education"])
def test_a_feature_the_model_was_trained_without_is_zero(weights, absent: str) -> None:
    model = ServedModel("m", 1, weights, {**META, absent: False})
    ratings = np.random.default_rng(2).random((3, MOVIES), dtype=np.float32)
    ages, education = np.array([20.0, 50.0, 80.0], np.float32), np.array([0, 3, 6])
    got = model.forward(Watchers(ratings, ages, education))
    column = 0 if absent == "has_age" else 1
    features = np.column_stack([(ages - META["age_mean"]) / META["age_std"], education])
    features[:, column] = 0.0
    merged = np.concatenate([features, ratings @ weights["embedding"]], axis=1)
    hidden = np.maximum(merged @ weights["hidden_kernel"] + weights["hidden_bias"], 0)
    expected = 1 / (1 + np.exp(-(hidden @ weights["output_kernel"] + weights["output_bias"])))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # One watcher by liked ids ignores that feature too: the same as the dense pass.
    liked = np.flatnonzero(ratings[1] >= 0.5)
    one, _ = model.reconstruct_one([], liked.tolist(), 50.0, 3, 0)
    dense = (ratings[1] >= 0.5).astype(np.float32)[None]
    want = model.forward(Watchers(dense, ages[1:2], education[1:2]))[0]
    np.testing.assert_allclose(one, want, rtol=0, atol=1e-6)


def test_huge_logits_saturate_at_0_and_1_without_a_warning(weights) -> None:
    weights["output_bias"][:2] = [-1e4, 1e4]
    model = ServedModel("m", 1, weights, META)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exp's overflow is no error here
        got = model.forward(Watchers(np.zeros((1, MOVIES), np.float32), np.ones(1), np.ones(1)))
        one, _ = model.reconstruct_one([], [], 30.0, 1, 0)
    assert got[0, :2].tolist() == one[:2].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("top_k", [0, 3, MOVIES])
def test_one_watcher_answers_as_the_dense_pass(model: ServedModel, weights, top_k: int) -> None:
    """reconstruct_one adds up folded rows for liked ids: the same probabilities (1e-6) and
    the same recommendations as the (1, movies) pass of `reconstruct`, for liked ids and for
    ratings, duplicates and no likes included; float32, as the model's own."""
    ratings = np.zeros(MOVIES, np.float32)
    ratings[[1, 4, 7]] = [1.0, 0.5, 0.2]  # 0.5 is liked, 0.2 is not
    for liked, rated in (([3, 0, 9, 3], []), ([], []), ([], ratings.tolist())):
        probabilities, chosen = model.reconstruct_one(rated, liked, 41.0, 3, top_k)
        dense = model.make_watchers([rated], [liked], [41.0], [3])
        want, recommended = model.reconstruct(dense, top_k)
        np.testing.assert_allclose(probabilities, want[0], atol=1e-6)
        assert probabilities.dtype == want.dtype == np.float32
        reference = _reference_forward(weights, dense.ratings, [41.0], [3])[0]
        np.testing.assert_allclose(probabilities, reference, atol=1e-5)
        assert chosen.tolist() == (recommended[0].tolist() if top_k else [])


def test_one_watcher_in_a_catalogue_of_own_ids(weights) -> None:
    ids = np.arange(MOVIES) * 7 + 100
    own = ServedModel("m", 1, weights, dict(META), Catalogue(ids))
    probabilities, chosen = own.reconstruct_one([], [107, 121], 30.0, 1, 4)
    dense = own.make_watchers([[]], [[107, 121]], [30.0], [1])
    want, recommended = own.reconstruct(dense, 4)
    np.testing.assert_allclose(probabilities, want[0], atol=1e-6)
    assert chosen.tolist() == recommended[0].tolist()
    assert not {1, 3} & set(chosen.tolist())
    with pytest.raises(errors.NotFound, match=r"watchers\[0\]\.liked_movie_ids"):
        own.reconstruct_one([], [107, 108], 30.0, 1, 4)


@pytest.mark.parametrize(
    ("ratings", "liked", "age", "education", "top_k", "field"),
    [
        ([], [1], -1.0, 0, 1, "watchers[0].age_years"),
        ([], [1], 30.0, -1, 1, "watchers[0].education"),
        ([0.0] * MOVIES, [1], 30.0, 0, 1, "watchers[0]"),
        ([0.0] * (MOVIES - 1), [], 30.0, 0, 1, "watchers[0].ratings"),
        ([float("nan")] * MOVIES, [], 30.0, 0, 1, "watchers[0].ratings"),
        ([], [-1], 30.0, 0, 1, "watchers[0].liked_movie_ids"),
        ([], [1], 30.0, 0, -1, "top_k"),
    ],
)
def test_one_watcher_is_checked_as_many_are(
    model: ServedModel, ratings, liked, age: float, education: int, top_k: int, field: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as one:
        model.reconstruct_one(ratings, liked, age, education, top_k)
    with pytest.raises(errors.InvalidArgument) as many:
        model.reconstruct(model.make_watchers([ratings], [liked], [age], [education]), top_k)
    assert one.value.field == many.value.field == field


def test_the_memo_keeps_answers_and_starts_over_when_full(
    model: ServedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference, "MEMO_ANSWERS", 3)
    for i in range(3):
        assert model.remember(("k", i), i) == i
    assert model.memo == {("k", 0): 0, ("k", 1): 1, ("k", 2): 2}
    model.remember(("k", 3), 3)
    assert model.memo == {("k", 3): 3}


def test_one_watcher_by_liked_ids_or_by_0_1_ratings_gets_the_same_floats(
    model: ServedModel,
) -> None:
    ratings = np.zeros(MOVIES, np.float32)
    ratings[[2, 5, 11]] = 1
    by_ids = model.reconstruct_one([], [11, 2, 5], 33.0, 2, 4)
    by_ratings = model.reconstruct_one(ratings.tolist(), [], 33.0, 2, 4)
    np.testing.assert_array_equal(by_ids[0], by_ratings[0])
    assert by_ids[1].tolist() == by_ratings[1].tolist()
