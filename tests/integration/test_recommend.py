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
