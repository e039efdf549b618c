"""The served numpy fast path answers exactly as the saved Keras models do, one call or many."""

from __future__ import annotations

import numpy as np
import pytest

import movie_embeddings as me
from movie_embeddings_server import config
from movie_embeddings_server.model.vectors import TABLE_MOVIES
from movie_embeddings_server.store.models import KERAS_MODEL


@pytest.fixture(scope="module")
def versions(inproc) -> list[me.ModelRef]:
    """Three stored versions of one model: default preset, notebook preset, a wider one."""
    trainer = inproc.running.trainer
    synthetic = config.resolve_synthetic({"num_watchers": 300, "num_movies": 40, "seed": 3})
    for given in ({"epochs": 2}, {"preset": "notebook", "epochs": 2}, {"embedding_dim": 9}):
        trainer.train("fastpath", synthetic, config.resolve_training(given))
    with me.Client(inproc.target) as client:
        return [m.ref for m in client.list_models("fastpath")]


def _keras(inproc, ref: me.ModelRef):  # type: ignore[no-untyped-def]
    import keras

    path = inproc.running.store.root / ref.name / str(ref.version) / KERAS_MODEL
    return keras.saving.load_model(path)


def _inputs(seed: int, movies: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random watchers, then edge cases: no likes, all likes, youngest/oldest ages."""
    rng = np.random.default_rng(seed)
    ratings = rng.random((20, movies)).astype(np.float32)
    ratings[rng.random(ratings.shape) < 0.5] = 0
    ratings = np.vstack([ratings, np.zeros(movies), np.ones(movies), np.ones(movies)])
    ages = np.append(rng.uniform(15, 70, 20), [0, 150, 33]).astype(np.float32)
    education = np.append(rng.integers(0, 6, 20), [0, 5, 40])
    return ratings.astype(np.float32), ages, education


def test_every_version_reconstructs_as_its_keras_model(
    inproc, inproc_client: me.Client, versions: list[me.ModelRef]
) -> None:
    assert len(versions) == 3
    for ref in versions:
        info = inproc_client.get_model(ref)
        model = _keras(inproc, ref)
        ratings, ages, education = _inputs(ref.version, info.num_movies)
        features = np.column_stack([(ages - info.age_mean) / info.age_std, education])
        expected = model([ratings, features.astype(np.float32)]).numpy()
        batch = inproc_client.reconstruct_batch(
            ratings, age_years=ages, education=education, top_k=5, model=ref
        )
        np.testing.assert_allclose(batch.probabilities, expected, atol=1e-5)
        single = [
            inproc_client.reconstruct(
                ratings=r, age_years=float(a), education=int(e), top_k=5, model=ref
            )
            for r, a, e in zip(ratings, ages, education, strict=True)
        ]
        np.testing.assert_allclose([s.probabilities for s in single], expected, atol=1e-5)
        # Many in one call, or one at a time: the same answers (to BLAS rounding of a
        # 23-row product against a 1-row one), recommendations included.
        for i, one in enumerate(single):
            np.testing.assert_allclose(batch[i].probabilities, one.probabilities, atol=1e-6)
            assert [r.movie_id for r in batch[i].recommendations] == [
                r.movie_id for r in one.recommendations
            ]
        assert batch[21].recommendations == ()  # liked everything: nothing to recommend


def test_vectors_are_the_keras_embedding_kernel(
    inproc, inproc_client: me.Client, versions: list[me.ModelRef]
) -> None:
    for ref in versions:
        kernel = _keras(inproc, ref).get_layer("embedding").kernel.numpy()
        ids, matrix = inproc_client.movie_vectors(model=ref)
        np.testing.assert_array_equal(matrix, kernel)
        np.testing.assert_array_equal(ids, np.arange(len(kernel)))
        for movie in (0, 17, len(kernel) - 1):
            np.testing.assert_array_equal(
                inproc_client.movie_vector(movie, model=ref), kernel[movie]
            )
        picked_ids, picked = inproc_client.movie_vectors([5, 1, 5], model=ref)
        assert picked_ids.tolist() == [5, 1, 5]
        np.testing.assert_array_equal(picked, kernel[[5, 1, 5]])


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_nearest_movies_rank_the_keras_kernel(
    inproc, inproc_client: me.Client, versions: list[me.ModelRef], metric: str
) -> None:
    for ref in versions:
        kernel = _keras(inproc, ref).get_layer("embedding").kernel.numpy().astype(np.float64)
        for movie in (0, 7, 39):
            query = kernel[movie]
            if metric == "cosine":
                unit = kernel / np.linalg.norm(kernel, axis=1, keepdims=True)
                brute = unit @ (query / np.linalg.norm(query))
            elif metric == "dot":
                brute = kernel @ query
            else:
                brute = -np.linalg.norm(kernel - query, axis=1)
            by_id = inproc_client.nearest_movies(movie, k=39, metric=metric, model=ref)
            by_vector = inproc_client.nearest_movies(
                vector=kernel[movie], k=40, metric=metric, model=ref, exclude=[movie]
            )
            assert [n.movie_id for n in by_id] == [n.movie_id for n in by_vector]
            assert sorted(n.movie_id for n in by_id) == sorted(set(range(40)) - {movie})
            scores = np.array([n.score for n in by_id])
            np.testing.assert_allclose(scores, brute[[n.movie_id for n in by_id]], atol=1e-5)
            assert np.all(np.diff(scores) <= 1e-6)  # best first


@pytest.fixture(scope="module")
def large(inproc) -> me.ModelRef:
    """A version over more movies than a ranking table is built for (TABLE_MOVIES)."""
    synthetic = config.resolve_synthetic(
        {"num_watchers": 200, "num_movies": TABLE_MOVIES + 76, "seed": 4}
    )
    served = inproc.running.trainer.train(
        "fastpath-large", synthetic, config.resolve_training({"epochs": 1})
    )
    return me.ModelRef(served.name, served.version)


def _reference_top_k(probabilities: np.ndarray, liked: list[int], k: int) -> list[int]:
    """The k likeliest movies not liked, ties by lower id: a full stable sort."""
    order = np.lexsort((np.arange(len(probabilities)), -probabilities.astype(np.float64)))
    return [int(m) for m in order if m not in set(liked)][:k]


def test_one_watcher_by_liked_ids_is_the_keras_model(
    inproc, inproc_client: me.Client, versions: list[me.ModelRef], large: me.ModelRef
) -> None:
    """The single-watcher path adds up folded rows: the Keras output within 1e-5 over the
    dense row, and the reference top-k order, small and large catalogues alike."""
    for ref in [*versions, large]:
        info = inproc_client.get_model(ref)
        model = _keras(inproc, ref)
        n = info.num_movies
        rng = np.random.default_rng(ref.version)
        for liked in ([], [0], rng.choice(n, 20, replace=False).tolist(), [n - 1, 3, 3]):
            ratings = np.zeros((1, n), np.float32)
            ratings[0, liked] = 1
            age, education = float(rng.uniform(15, 70)), int(rng.integers(0, 6))
            features = np.array([[(age - info.age_mean) / info.age_std, education]], np.float32)
            expected = model([ratings, features]).numpy()[0]
            got = inproc_client.reconstruct(
                liked, age_years=age, education=education, top_k=10, model=ref
            )
            np.testing.assert_allclose(got.probabilities, expected, atol=1e-5)
            assert [r.movie_id for r in got.recommendations] == _reference_top_k(
                got.probabilities, liked, 10
            )
            dense = inproc_client.reconstruct(
                ratings=ratings[0], age_years=age, education=education, top_k=10, model=ref
            )
            np.testing.assert_allclose(dense.probabilities, expected, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_nearest_movies_of_a_large_catalogue_rank_the_keras_kernel(
    inproc, inproc_client: me.Client, large: me.ModelRef, metric: str
) -> None:
    """Past TABLE_MOVIES a query by id searches, and its answer is kept: the first and the
    kept answer are the same, in the order a search by that movie's vector gives."""
    kernel = _keras(inproc, large).get_layer("embedding").kernel.numpy()
    for movie in (0, 700, len(kernel) - 1):
        first = inproc_client.nearest_movies(movie, k=12, metric=metric, model=large)
        kept = inproc_client.nearest_movies(movie, k=12, metric=metric, model=large)
        by_vector = inproc_client.nearest_movies(
            vector=kernel[movie], k=12, metric=metric, model=large, exclude=[movie]
        )
        assert first == kept
        assert [n.movie_id for n in first] == [n.movie_id for n in by_vector]
        np.testing.assert_allclose(
            [n.score for n in first], [n.score for n in by_vector], atol=1e-6
        )
