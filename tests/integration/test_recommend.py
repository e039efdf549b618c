"""Recommendations for a dataset's own watchers by id, through a real in-process server and
the SDK: a hand-made catalogue with genres, watcher features known or absent, held-out and
dropped watchers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import InProcess

import movie_embeddings as me

GENRES = ("Comedy", "Drama", "Horror")
REGULAR_MOVIES = range(1, 16)  # movie m is of genre GENRES[m % 3]; liked by that taste
WATCHERS = range(101, 161)  # watcher w has taste w % 3
RARE = {16: 101, 17: 102}  # movie: the one watcher who likes it ("Comedy|Drama")
LONER = 199  # rates one movie: fewer likes than min_likes_per_watcher, so never kept
MODEL = "recmodel"


def _age(w: int) -> float:
    return math.nan if w % 4 == 0 else 20.0 + 10 * (w % 3) + w % 7


def _education(w: int) -> float:
    return math.nan if w % 5 == 0 else float(w % 3)


def _ratings() -> list[tuple[int, int, float]]:
    rows = [(w, m, 5.0 if m % 3 == w % 3 else 2.0) for w in WATCHERS for m in REGULAR_MOVIES]
    rows += [(w, m, 4.5) for m, w in RARE.items()]
    return [*rows, (LONER, 1, 5.0)]


@dataclass(frozen=True)
class Trained:
    info: me.ModelInfo
    likes: dict[int, set[int]]  # each watcher's liked movie ids, as the test wrote them
    heldout: set[int]


@pytest.fixture(scope="module")
def trained(inproc: InProcess) -> Iterator[Trained]:
    ratings = _ratings()
    movies = [*REGULAR_MOVIES, *RARE]
    watchers = [*WATCHERS, LONER]
    with me.Client(inproc.target) as client:
        client.import_dataset(
            "handmade",
            {
                "watcher_id": [w for w, _, _ in ratings],
                "movie_id": [m for _, m, _ in ratings],
                "rating": [r for _, _, r in ratings],
            },
            movies={
                "movie_id": movies,
                "title": [f"Movie {m}" for m in movies],
                "genres": [
                    GENRES[m % 3] if m in REGULAR_MOVIES else "Comedy|Drama" for m in movies
                ],
            },
            watchers={
                "watcher_id": watchers,
                "age_years": [_age(w) for w in watchers],
                "education": [_education(w) for w in watchers],
            },
        )
        *_, info = client.train(
            MODEL,
            dataset="handmade",
            seed=1,
            holdout_fraction=0.2,
            epochs=3,
            embedding_dim=8,
            hidden_units=16,
            validation_fraction=0.0,
            early_stopping_patience=0,
        )
    assert isinstance(info, me.ModelInfo)
    directory = inproc.running.store.root / MODEL / str(info.version)
    with np.load(directory / "heldout.npz") as held:
        heldout = set(held["watcher_ids"].tolist())
    likes: dict[int, set[int]] = {}
    for w, m, r in ratings:
        if r >= 4:
            likes.setdefault(w, set()).add(m)
    yield Trained(info, likes, heldout)


@pytest.fixture
def client(inproc: InProcess) -> Iterator[me.Client]:
    with me.Client(inproc.target) as c:
        yield c


def test_by_id_is_a_reconstruct_of_the_watchers_likes_and_features(
    trained: Trained, client: me.Client
) -> None:
    info = trained.info
    assert info.has_age and info.has_education and 0 < len(trained.heldout) < len(WATCHERS)
    catalogue = set(client.movie_table(model=info.ref).movie_ids.tolist())
    trained_on = [w for w in WATCHERS if w not in trained.heldout]
    # Held out or trained on; every feature known, or one of them absent.
    chosen = {
        "held out": min(trained.heldout),
        "trained on": next(w for w in trained_on if w % 4 and w % 5),
        "no age": next(w for w in trained_on if w % 4 == 0 and w % 5),
        "no education": next(w for w in trained_on if w % 5 == 0 and w % 4),
        "rare movie": 101,
    }
    for what, w in chosen.items():
        got = client.recommend(w, top_k=5, model=info.ref)
        liked = sorted(trained.likes[w] & catalogue)
        age, education = _age(w), _education(w)
        expected = client.reconstruct(
            liked,
            # An absent feature as training took it: the mean age, education 0.
            age_years=info.age_mean if math.isnan(age) else age,
            education=0 if math.isnan(education) else int(education),
            top_k=5,
            probabilities=False,
            model=info.ref,
        ).recommendations
        assert len(got) == 5, what
        assert not {r.movie_id for r in got} & trained.likes[w], what
        assert [r.movie_id for r in got] == [r.movie_id for r in expected], what
        assert [r.title for r in got] == [f"Movie {r.movie_id}" for r in got], what
        # The request's age is a float32 on the wire; the server's mean age is not.
        rtol = 1e-5 if math.isnan(age) else 0
        np.testing.assert_allclose(
            [r.probability for r in got], [r.probability for r in expected], rtol=rtol
        )


def test_by_id_in_reconstruct_many_and_the_async_client(
    trained: Trained, client: me.Client, inproc: InProcess
) -> None:
    import asyncio

    w = next(w for w in WATCHERS if w not in trained.heldout)
    expected = client.recommend(w, top_k=3, model=MODEL)
    mixed = client.reconstruct_many(
        [me.Watcher(0, 0, watcher_id=w), me.Watcher(30, 1, [1, 2])],
        top_k=3,
        probabilities=False,
        model=MODEL,
    )
    assert mixed[0].recommendations == tuple(expected)
    assert len(mixed[1].recommendations) == 3

    async def recommend() -> list[me.Recommendation]:
        async with me.AsyncClient(inproc.target) as aclient:
            return await aclient.recommend(w, top_k=3, model=MODEL)

    assert asyncio.run(recommend()) == expected


@pytest.mark.parametrize(
    ("watcher_id", "words"),
    [
        (LONER, f"watcher {LONER} is not one of the 60 watchers model {MODEL} v"),
        (12345, "watcher 12345 is not one of the 60 watchers"),
        (-3, "watcher -3 is not one of"),
    ],
)
def test_a_watcher_the_model_did_not_keep_is_not_found(
    trained: Trained, client: me.Client, watcher_id: int, words: str
) -> None:
    with pytest.raises(me.NotFound) as exc:
        client.recommend(watcher_id, model=MODEL)
    assert exc.value.details.startswith("watchers[0].watcher_id: " + words)
    assert "kept from dataset handmade v" in exc.value.details
    assert "(those with at least 5 likes)" in exc.value.details


def test_a_synthetic_model_has_no_watcher_ids(trained: Trained, client: me.Client) -> None:
    with pytest.raises(me.InvalidArgument) as exc:
        client.recommend(101, model="default")
    assert exc.value.details.startswith("watchers[0].watcher_id: model default v")
    assert "trained on synthetic data" in exc.value.details


def test_a_watcher_id_comes_alone(trained: Trained, client: me.Client) -> None:
    for watcher in (
        me.Watcher(0, 0, [1], watcher_id=101),
        me.Watcher(30, 0, watcher_id=101),
        me.Watcher(0, 2, watcher_id=101),
        me.Watcher(0, 0, ratings=np.zeros(trained.info.num_movies), watcher_id=101),
    ):
        with pytest.raises(me.InvalidArgument) as exc:
            client.reconstruct_many([watcher], top_k=2, model=MODEL)
        assert exc.value.details.startswith("watchers[0]: set watcher_id alone")


def test_a_version_without_its_watchers_file_says_to_train_again(
    trained: Trained, client: me.Client, inproc: InProcess
) -> None:
    *_, info = client.train("recold", dataset="handmade", seed=2, epochs=1, embedding_dim=4)
    assert isinstance(info, me.ModelInfo)
    # As a version stored before versions kept their watchers (read on the first by-id query).
    (inproc.running.store.root / "recold" / str(info.version) / "watchers.npz").unlink()
    with pytest.raises(me.FailedPrecondition) as exc:
        client.recommend(101, model=info.ref)
    assert exc.value.details == (
        f"model recold v{info.version} has no watchers stored (it was trained before versions "
        "kept them): train it again to name watchers by id"
    )


# Filters and reasons (issue 20 item 4) on the same hand-made catalogue.


@dataclass(frozen=True)
class Catalogue:
    ids: list[int]
    likes: dict[int, int]
    genres: dict[int, set[str]]
    unit: dict[int, np.ndarray]  # each movie's vector scaled to length 1


@pytest.fixture(scope="module")
def catalogue(trained: Trained, inproc: InProcess) -> Catalogue:
    with me.Client(inproc.target) as client:
        table = client.movie_table(model=trained.info.ref)
    ids = table.movie_ids.tolist()
    unit = table.vectors / np.linalg.norm(table.vectors, axis=1, keepdims=True)
    return Catalogue(
        ids,
        dict(zip(ids, table.num_likes.tolist(), strict=True)),
        {m: set(g) for m, g in zip(ids, table.genres, strict=True)},
        dict(zip(ids, unit, strict=True)),
    )


def _ranked(scores: dict[int, float], passes: set[int]) -> list[int]:
    """The movies that pass, best score first, ties by lower id."""
    return sorted(passes, key=lambda m: (-scores[m], m))


def test_nearest_filters_apply_before_the_k_nearest_are_taken(
    trained: Trained, catalogue: Catalogue, client: me.Client
) -> None:
    query = 4  # a Drama
    others = [m for m in catalogue.ids if m != query]
    cosine = {m: float(catalogue.unit[m] @ catalogue.unit[query]) for m in others}
    everything = client.nearest_movies(query, k=100, model=MODEL, min_likes=0)
    assert [n.movie_id for n in everything] == _ranked(cosine, set(others))
    for filters, passes in [
        ({"genres": ["horror"]}, lambda m: "Horror" in catalogue.genres[m]),
        ({"genres": ["Horror", "COMEDY"]}, lambda m: catalogue.genres[m] & {"Horror", "Comedy"}),
        ({"exclude_genres": ["Comedy"]}, lambda m: "Comedy" not in catalogue.genres[m]),
        (
            {"genres": ["Comedy"], "exclude_genres": ["Drama"]},
            lambda m: catalogue.genres[m] == {"Comedy"},
        ),
        ({"min_likes": 12}, lambda m: catalogue.likes[m] >= 12),
        ({"min_likes": 12, "genres": ["Drama"]}, lambda m: catalogue.likes[m] >= 12 and m % 3 == 1),
    ]:
        expected = _ranked(cosine, {m for m in others if passes(m)})
        assert 3 <= len(expected) < len(others), filters
        got = client.nearest_movies(query, k=3, model=MODEL, **{"min_likes": 0, **filters})
        assert [n.movie_id for n in got] == expected[:3], filters  # exactly k, the best that pass
        assert [n.score for n in got] == pytest.approx([cosine[m] for m in expected[:3]])
        by_vector = client.nearest_movies(
            vector=catalogue.unit[query] * 3, k=len(others), model=MODEL, **filters
        )
        assert {n.movie_id for n in by_vector} <= {*expected, query}, filters
    excluded = client.nearest_movies(
        query, k=3, model=MODEL, genres=["Horror"], exclude=[2], min_likes=0
    )
    # The Horror movies but 2 (m % 3 == 2 only among the regular movies: 17 is Comedy|Drama).
    horror = _ranked(cosine, {m for m in others if "Horror" in catalogue.genres[m] and m != 2})
    assert [n.movie_id for n in excluded] == horror[:3]


def test_a_dataset_models_neighbours_leave_rarely_liked_movies_out_by_default(
    trained: Trained, catalogue: Catalogue, client: me.Client
) -> None:
    # The floor: 10, or a tenth of the most liked movie's likes (rounded up) when less.
    floor = min(10, -(-max(catalogue.likes.values()) // 10))
    rare = {m for m in catalogue.ids if catalogue.likes[m] < floor}
    assert floor == 2 and rare, catalogue.likes  # a movie liked once is in the catalogue
    for query in (4, 5):
        default = client.nearest_movies(query, k=100, model=MODEL)
        everything = client.nearest_movies(query, k=100, model=MODEL, min_likes=0)
        assert [n.movie_id for n in default] == [
            n.movie_id for n in everything if n.movie_id not in rare
        ]
        assert len(default) == len(catalogue.ids) - 1 - len(rare - {query})
    # Synthetic data counts no likes: no floor there.
    assert len(client.nearest_movies(3, k=100, model="default")) == 79


def test_recommendations_are_filtered_before_the_top_k(
    trained: Trained, catalogue: Catalogue, client: me.Client
) -> None:
    # A watcher who likes the comedies.
    w = next(w for w in WATCHERS if w not in trained.heldout and w % 3 == 0 and w % 4 and w % 5)
    liked = sorted(trained.likes[w] & set(catalogue.ids))
    every = client.reconstruct(liked, age_years=_age(w), education=int(_education(w)), model=MODEL)
    probability = dict(zip(catalogue.ids, every.probabilities.tolist(), strict=True))
    for filters, passes in [
        ({"genres": ["Horror"]}, lambda m: m % 3 == 2),
        ({"exclude_genres": ["horror", "comedy"]}, lambda m: catalogue.genres[m] == {"Drama"}),
        ({"min_likes": 12}, lambda m: catalogue.likes[m] >= 12),
    ]:
        expected = _ranked(probability, {m for m in catalogue.ids if passes(m)} - set(liked))
        assert len(expected) >= 3, filters
        got = client.recommend(w, top_k=3, model=MODEL, **filters)
        assert [r.movie_id for r in got] == expected[:3], filters
        many = client.reconstruct_many(
            [me.Watcher(_age(w), int(_education(w)), liked)], top_k=3, model=MODEL, **filters
        )
        assert [r.movie_id for r in many[0].recommendations] == expected[:3], filters
        np.testing.assert_array_equal(many[0].probabilities, every.probabilities)  # unfiltered
        ratings = np.isin(catalogue.ids, liked).astype(np.float32)[None]
        batch = client.reconstruct_batch(
            ratings, age_years=[_age(w)], education=[int(_education(w))], top_k=3, model=MODEL,
            **filters,
        )  # fmt: skip
        assert batch.recommended_movie_ids[0].tolist() == expected[:3], filters
    # Fewer pass than top_k: all of them, no more.
    got = client.recommend(w, top_k=10, model=MODEL, genres=["Drama"])
    dramas = {m for m in catalogue.ids if "Drama" in catalogue.genres[m]} - set(liked)
    assert 0 < len(dramas) < 10 and {r.movie_id for r in got} == dramas


def test_because_names_the_liked_movies_nearest_to_each_recommendation(
    trained: Trained, catalogue: Catalogue, client: me.Client
) -> None:
    w = next(w for w in WATCHERS if w not in trained.heldout and w % 4 and w % 5)
    liked = sorted(trained.likes[w] & set(catalogue.ids))
    plain = client.recommend(w, top_k=4, model=MODEL)
    explained = client.recommend(w, top_k=4, model=MODEL, because=True)
    assert all(r.because_movie_ids == () == r.because_titles for r in plain)  # as before
    assert [(r.movie_id, r.probability) for r in explained] == [
        (r.movie_id, r.probability) for r in plain
    ]
    for r in explained:
        cosine = {m: float(catalogue.unit[m] @ catalogue.unit[r.movie_id]) for m in liked}
        assert list(r.because_movie_ids) == _ranked(cosine, set(liked))[:3]
        assert r.because_titles == tuple(f"Movie {m}" for m in r.because_movie_ids)
    # A watcher given by likes or ratings alike; one who liked nothing has no reasons.
    (by_likes, nothing) = client.reconstruct_many(
        [me.Watcher(_age(w), int(_education(w)), liked), me.Watcher(30, 1)],
        top_k=4,
        because=True,
        model=MODEL,
    )
    assert by_likes.recommendations == tuple(explained)
    assert all(r.because_movie_ids == () for r in nothing.recommendations)


@pytest.mark.parametrize(
    ("model", "filters", "field", "words"),
    [
        (MODEL, {"genres": ["Comdy"]}, "filter.genres[0]", "'Comdy' is not a genre of model "),
        (MODEL, {"exclude_genres": ["Drama", "x"]}, "filter.exclude_genres[1]", "'x' is not a"),
        (MODEL, {"min_likes": -1}, "filter.min_likes", "must be >= 0, got -1"),
        ("default", {"min_likes": 1}, "filter.min_likes", "model default v"),
        ("default", {"genres": ["Drama"]}, "filter.genres[0]", "'Drama': model default v"),
    ],
)
def test_a_bad_filter_names_its_field(
    trained: Trained, client: me.Client, model: str, filters: dict, field: str, words: str
) -> None:
    for call in (
        lambda: client.nearest_movies(1, model=model, **filters),
        lambda: client.reconstruct_many([me.Watcher(30, 1, [1])], top_k=2, model=model, **filters),
    ):
        with pytest.raises(me.InvalidArgument) as exc:
            call()
        assert exc.value.details.startswith(f"{field}: {words}")
        assert exc.value.field_violations[0][0] == field
    if "genres" in filters and model == MODEL:
        assert "(its genres: Comedy, Drama, Horror)" in exc.value.details
