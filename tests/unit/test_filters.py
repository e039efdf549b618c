"""Filters of the movies an answer may hold, and the liked movies behind a recommendation:
masks, defaults and refusals, and neighbours against brute force on both search paths."""

from __future__ import annotations

import numpy as np
import pytest

from movie_embeddings_server.errors import InvalidArgument
from movie_embeddings_server.model import filters
from movie_embeddings_server.model.catalogue import Catalogue
from movie_embeddings_server.model.filters import MovieFilter
from movie_embeddings_server.model.vectors import TABLE_MOVIES, MovieVectors

GENRES = ["Comedy", "Drama", "Horror|Comedy", "", "(no genres listed)", "Sci-Fi"]


def _catalogue(n: int, seed: int = 0) -> Catalogue:
    rng = np.random.default_rng(seed)
    return Catalogue(
        np.arange(n) * 3 + 1,
        genres=np.array([GENRES[i % len(GENRES)] for i in range(n)]),
        num_likes=rng.integers(0, 40, n),
    )


def test_each_condition_masks_the_rows_it_leaves_out() -> None:
    c = _catalogue(60)
    genres = [set(c.genre_list(r)) for r in range(len(c))]
    assert filters.left_out(c, MovieFilter()) is None  # every movie may come
    cases = [
        (MovieFilter(min_likes=10), lambda r: c.num_likes[r] < 10),
        (MovieFilter(genres=["comedy"]), lambda r: "Comedy" not in genres[r]),
        (MovieFilter(genres=["SCI-FI", "horror"]), lambda r: not genres[r] & {"Sci-Fi", "Horror"}),
        (MovieFilter(exclude_genres=["Comedy"]), lambda r: "Comedy" in genres[r]),
        (
            MovieFilter(min_likes=5, genres=["Comedy"], exclude_genres=["Horror"]),
            lambda r: c.num_likes[r] < 5 or genres[r] != {"Comedy"},
        ),
    ]
    for wanted, out in cases:
        mask = filters.left_out(c, wanted)
        assert mask is not None
        assert mask.tolist() == [bool(out(r)) for r in range(len(c))], wanted


def test_the_default_minimum_applies_only_when_min_likes_is_unset() -> None:
    c = _catalogue(60)
    default = filters.left_out(c, MovieFilter(), 7)
    assert default is not None and default.tolist() == (c.num_likes < 7).tolist()
    assert filters.left_out(c, MovieFilter(min_likes=0), 7) is None
    with_genre = filters.left_out(c, MovieFilter(genres=["Drama"]), 7)
    assert with_genre is not None
    assert with_genre.tolist() == ((c.num_likes < 7) | (np.array(c.genres) != "Drama")).tolist()


def test_the_neighbour_floor_is_ten_likes_or_a_tenth_of_the_most_liked() -> None:
    assert filters.neighbour_min_likes(Catalogue.identity(5)) == 0  # no like counts
    for most, floor in [(242, 10), (100, 10), (99, 10), (90, 9), (11, 2), (6, 1), (0, 0)]:
        c = Catalogue(np.arange(3), num_likes=np.array([0, most, 0]))
        assert filters.neighbour_min_likes(c) == floor, most


def test_a_neighbour_list_leaves_out_the_floor_unless_its_filter_says_otherwise() -> None:
    c = _catalogue(60)
    vectors = MovieVectors(np.ones((60, 3), np.float32), c)
    floor = filters.neighbour_min_likes(c)
    unfiltered = vectors.neighbour_left_out(MovieFilter())
    assert unfiltered is not None and unfiltered.tolist() == (c.num_likes < floor).tolist()
    assert vectors.neighbour_left_out(MovieFilter()) is unfiltered  # found once, shared
    assert not unfiltered.flags.writeable
    for wanted in (
        MovieFilter(min_likes=0),
        MovieFilter(genres=["Drama"]),
        MovieFilter(min_likes=30),
    ):
        got, want = vectors.neighbour_left_out(wanted), filters.left_out(c, wanted, floor)
        assert (got is None and want is None) or (got == want).all(), wanted
    assert MovieVectors(np.ones((5, 3), np.float32), None).neighbour_left_out(MovieFilter()) is None


@pytest.mark.parametrize(
    ("catalogue", "wanted", "field", "words"),
    [
        (_catalogue(10), MovieFilter(genres=["Dram"]), "filter.genres[0]", "'Dram' is not a"),
        (
            _catalogue(10),
            MovieFilter(exclude_genres=["Drama", "Western"]),
            "filter.exclude_genres[1]",
            "'Western' is not a genre of this model (its genres: Comedy, Drama, Horror, Sci-Fi)",
        ),
        (_catalogue(10), MovieFilter(min_likes=-2), "filter.min_likes", "must be >= 0, got -2"),
        (Catalogue.identity(4), MovieFilter(min_likes=1), "filter.min_likes", "this model was"),
        (Catalogue.identity(4), MovieFilter(genres=["X"]), "filter.genres[0]", "'X': this model"),
    ],
)
def test_a_bad_filter_names_its_field(
    catalogue: Catalogue, wanted: MovieFilter, field: str, words: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        filters.left_out(catalogue, wanted)
    assert str(exc.value).startswith(f"{field}: {words}")


def test_a_long_list_of_genres_is_cut_short() -> None:
    many = np.array([f"G{i:03d}" for i in range(100)])
    with pytest.raises(InvalidArgument) as exc:
        filters.left_out(Catalogue(np.arange(100), genres=many), MovieFilter(genres=["nope"]))
    assert f"G{filters.LISTED_GENRES - 1:03d}, ...)" in str(exc.value)


def _brute(vectors: MovieVectors, query: int, k: int, out: np.ndarray) -> list[int]:
    scores = vectors.unit @ vectors.unit[query]
    kept = [r for r in range(vectors.num_movies) if r != query and not out[r]]
    return sorted(kept, key=lambda r: (-scores[r], r))[:k]


@pytest.mark.parametrize("n", [200, TABLE_MOVIES + 1, 6000])  # ranking table, search, sampled
def test_filtered_neighbours_are_the_best_that_pass(n: int) -> None:
    c = _catalogue(n, seed=n)
    embedding = np.random.default_rng(n).normal(size=(n, 8)).astype(np.float32)
    vectors = MovieVectors(embedding, c)
    out = filters.left_out(c, MovieFilter(min_likes=30, genres=["Comedy"]))
    assert out is not None and 10 < np.count_nonzero(~out) < n // 2
    for query in (0, 5, n - 1):
        excluded = np.array([c.movie_ids[r] for r in _brute(vectors, query, 2, out)])
        rows, _ = vectors.nearest(
            movie_id=int(c.movie_ids[query]),
            vector=None,
            k=7,
            metric="cosine",
            exclude=excluded,
            leave_out=out,
        )
        assert rows == _brute(vectors, query, 9, out)[2:]  # exactly k, after the excluded
    few = np.ones(n, dtype=bool)
    few[[3, 4]] = False
    none = np.array([], dtype=np.int64)
    rows, _ = vectors.nearest(
        movie_id=None, vector=embedding[3], k=10, metric="cosine", exclude=none, leave_out=few
    )
    assert sorted(rows) == [3, 4]  # fewer pass than k: all of them


def test_the_liked_movies_nearest_to_each_recommendation() -> None:
    embedding = np.array([[1, 0], [0, 1], [1, 1], [1, -1], [-1, 0], [2, 0.1]], np.float32)
    vectors = MovieVectors(embedding, None)
    because = vectors.nearest_liked(np.array([5, 1]), [0, 2, 3, 4])
    assert because.tolist() == [[0, 2, 3], [2, 0, 4]]  # cosine order; 0 and 4 tie for row 1
    assert vectors.nearest_liked(np.array([5]), [3]).tolist() == [[3]]
    assert vectors.nearest_liked(np.array([5, 1]), []).shape == (2, 0)
