"""The catalogue: a dataset's own movie ids <-> rows, titles, genres, title search; and
ServedModel answering in those ids on every query path, against brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from movie_embeddings_server import errors
from movie_embeddings_server.model import search
from movie_embeddings_server.model.catalogue import Catalogue, words
from movie_embeddings_server.model.inference import ServedModel
from movie_embeddings_server.model.vectors import TABLE_MOVIES

TITLES = {
    1: ("Toy Story (1995)", "Adventure|Animation|Children|Comedy|Fantasy", 215),
    3114: ("Toy Story 2 (1999)", "Adventure|Animation|Children|Comedy|Fantasy", 97),
    73: ("Misérables, Les (1995)", "Drama|War", 4),
    4896: ("Harry Potter and the Sorcerer's Stone (2001)", "Adventure|Children|Fantasy", 80),
    78499: ("Toy Story 3 (2010)", "(no genres listed)", 97),
    5: ("Father of the Bride Part II (1995)", "Comedy", 40),
}


@pytest.fixture
def catalogue() -> Catalogue:
    ids = sorted(TITLES)
    return Catalogue(
        np.array(ids),
        np.array([TITLES[m][0] for m in ids]),
        np.array([TITLES[m][1] for m in ids]),
        np.array([TITLES[m][2] for m in ids]),
    )


def test_words_ignore_case_accents_and_punctuation() -> None:
    assert words("Misérables, Les (1995)") == ["miserables", "les", "1995"]
    assert words("  ÉTÉ!! ") == ["ete"]
    assert words("--- ()") == []


def test_identity_maps_ids_to_themselves() -> None:
    c = Catalogue.identity(80)
    assert c.is_identity and len(c) == 80
    assert c.row("movie_id", 79) == 79
    np.testing.assert_array_equal(c.rows("ids", np.array([3, 0, 3])), [3, 0, 3])
    assert c.title(3) == "" and c.genre_list(3) == []
    with pytest.raises(errors.NotFound, match="movie 80 is not"):
        c.row("movie_id", 80)
    with pytest.raises(errors.InvalidArgument) as exc:
        c.rows("exclude_movie_ids", np.array([1, -2]))
    assert exc.value.field == "exclude_movie_ids"


def test_own_ids_map_to_rows_and_back(catalogue: Catalogue) -> None:
    assert not catalogue.is_identity
    ids = np.array([78499, 1, 73, 1])
    rows = catalogue.rows("movie_ids", ids)
    np.testing.assert_array_equal(catalogue.movie_ids[rows], ids)
    np.testing.assert_array_equal(catalogue.ids(rows), ids)
    assert catalogue.row("movie_id", 3114) == sorted(TITLES).index(3114)
    assert catalogue.title(catalogue.row("movie_id", 73)) == "Misérables, Les (1995)"
    assert catalogue.genre_list(catalogue.row("movie_id", 73)) == ["Drama", "War"]
    assert catalogue.genre_list(catalogue.row("movie_id", 78499)) == []


@pytest.mark.parametrize("missing", [2, 0, 4, 78500, 10**9])
def test_an_id_not_in_the_catalogue_is_not_found(catalogue: Catalogue, missing: int) -> None:
    with pytest.raises(errors.NotFound, match=f"movie {missing} is not"):
        catalogue.rows("movie_ids", np.array([1, missing]))
    with pytest.raises(errors.NotFound, match=f"movie_id: movie {missing} is not"):
        catalogue.row("movie_id", missing)


def test_negative_ids_are_malformed(catalogue: Catalogue) -> None:
    with pytest.raises(errors.InvalidArgument, match="must be >= 0, got -1"):
        catalogue.row("movie_id", -1)


def test_search_needs_every_word_and_ranks_most_liked_first(catalogue: Catalogue) -> None:
    found = [int(catalogue.movie_ids[r]) for r in catalogue.search("toy story", 10)]
    assert found == [1, 3114, 78499]  # 215 likes, then 97 and 97 by lower id
    assert [int(catalogue.movie_ids[r]) for r in catalogue.search("TOY stor 1999", 10)] == [3114]
    assert catalogue.search("toy potter", 10) == []
    assert len(catalogue.search("toy", 2)) == 2


def test_search_ignores_accents_and_case(catalogue: Catalogue) -> None:
    (row,) = catalogue.search("miserables", 10)
    assert catalogue.title(row) == "Misérables, Les (1995)"
    assert catalogue.search("MISÉRABLES les", 10) == [row]


def test_search_words_are_prefixes_of_title_words(catalogue: Catalogue) -> None:
    assert [int(catalogue.movie_ids[r]) for r in catalogue.search("sorc", 10)] == [4896]
    assert catalogue.search("orcerer", 10) == []  # not a substring match inside a word


def test_search_refuses_a_query_without_words(catalogue: Catalogue) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        catalogue.search(" ,;() ", 10)
    assert exc.value.field == "query"
    with pytest.raises(errors.InvalidArgument) as exc:
        catalogue.search("toy", -1)
    assert exc.value.field == "limit"


def test_save_and_load_round_trip(tmp_path: Path, catalogue: Catalogue) -> None:
    catalogue.save(tmp_path)
    loaded = Catalogue.load(tmp_path, len(TITLES))
    np.testing.assert_array_equal(loaded.movie_ids, catalogue.movie_ids)
    assert loaded.titles == catalogue.titles and loaded.genres == catalogue.genres
    np.testing.assert_array_equal(loaded.num_likes, catalogue.num_likes)
    with pytest.raises(ValueError, match="lists 6 movies"):
        Catalogue.load(tmp_path, 7)


def test_load_without_a_file_is_the_identity(tmp_path: Path) -> None:
    loaded = Catalogue.load(tmp_path, 12)
    assert loaded.is_identity and len(loaded) == 12 and loaded.titles is None


def _model(n: int, rng: np.random.Generator) -> tuple[ServedModel, np.ndarray]:
    """A model over n movies numbered like a dataset (sparse, not 0..n-1)."""
    dim, hidden = 6, 9
    weights = {
        "embedding": rng.normal(size=(n, dim)).astype(np.float32),
        "hidden_kernel": rng.normal(size=(2 + dim, hidden)).astype(np.float32),
        "hidden_bias": rng.normal(size=hidden).astype(np.float32),
        "output_kernel": rng.normal(size=(hidden, n)).astype(np.float32),
        "output_bias": rng.normal(size=n).astype(np.float32),
    }
    ids = np.sort(rng.choice(10 * n, size=n, replace=False)) + 1
    meta = {"age_mean": 0.0, "age_std": 1.0, "has_age": False, "has_education": True}
    return ServedModel("m", 1, weights, meta, Catalogue(ids)), ids


@pytest.mark.parametrize("n", [50, TABLE_MOVIES + 476, 5000])  # the table, search, top-k paths
@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_nearest_in_own_ids_matches_brute_force(n: int, metric: str) -> None:
    rng = np.random.default_rng(n)
    model, ids = _model(n, rng)
    for row in rng.choice(n, size=5, replace=False).tolist():
        excluded = rng.choice(n, size=3, replace=False)
        got_rows, got_scores = model.nearest(
            movie_id=int(ids[row]), vector=None, k=7, metric=metric, exclude=ids[excluded]
        )
        scores = search.scores(model.embedding, model.unit, model.embedding[row], metric)
        scores = scores.astype(np.float64)
        scores[excluded] = -np.inf
        scores[row] = -np.inf  # never its own neighbour
        want = np.argsort(-scores, kind="stable")[:7]
        assert row not in got_rows
        np.testing.assert_array_equal(got_rows, want)
        np.testing.assert_allclose(got_scores, scores[want], rtol=1e-5)
        assert set(model.catalogue.ids(np.array(got_rows)).tolist()).isdisjoint(ids[excluded])


def test_liked_ids_are_the_catalogue_ids_and_absent_age_is_ignored() -> None:
    rng = np.random.default_rng(3)
    model, ids = _model(40, rng)
    by_ids = model.make_watchers([[]], [[int(ids[5]), int(ids[39])]], [33.0], [2])
    dense = np.zeros((1, 40), np.float32)
    dense[0, [5, 39]] = 1.0
    np.testing.assert_array_equal(by_ids.ratings, dense)
    with pytest.raises(errors.NotFound, match=r"watchers\[0\]\.liked_movie_ids"):
        model.make_watchers([[]], [[int(ids[0]) + 1 if ids[0] + 1 not in ids else 0]], [1.0], [0])
    older = model.make_watchers([[]], [[int(ids[5])]], [90.0], [2])
    younger = model.make_watchers([[]], [[int(ids[5])]], [10.0], [2])
    np.testing.assert_array_equal(model.forward(older), model.forward(younger))
    less = model.make_watchers([[]], [[int(ids[5])]], [10.0], [0])
    assert not np.array_equal(model.forward(less), model.forward(younger))


def test_recommendations_are_rows_mapped_to_ids() -> None:
    rng = np.random.default_rng(4)
    model, ids = _model(60, rng)
    watchers = model.make_watchers([[]], [[int(ids[0])]], [1.0], [0])
    probabilities, (chosen,) = model.reconstruct(watchers, 5)
    assert 0 not in chosen.tolist()  # liked already
    want = np.argsort(-np.where(np.arange(60) == 0, -np.inf, probabilities[0]), kind="stable")
    np.testing.assert_array_equal(chosen, want[:5])
    np.testing.assert_array_equal(model.catalogue.ids(chosen), ids[want[:5]])


# --- what each refusal says, and the catalogue's own invariants ---------------------------


def test_a_movie_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError) as refused:
        Catalogue(np.array([4, 9, 4]))
    assert str(refused.value) == "a catalogue lists each movie once"


def test_not_found_says_which_movie_and_how_the_catalogue_numbers_them(
    catalogue: Catalogue,
) -> None:
    own = "is not in this model (its catalogue holds 6 movies, by their dataset's ids)"
    with pytest.raises(errors.NotFound) as missing:
        catalogue.row("movie_id", 2)
    assert str(missing.value) == f"movie_id: movie 2 {own}"
    with pytest.raises(errors.NotFound) as missing:
        catalogue.rows("movie_ids", np.array([1, 7]))
    assert str(missing.value) == f"movie_ids: movie 7 {own}"
    identity = Catalogue.identity(4)
    with pytest.raises(errors.NotFound) as missing:
        identity.row("movie_id", 4)
    assert str(missing.value) == "movie_id: movie 4 is not in this model (movie ids are 0..3)"
    with pytest.raises(errors.NotFound) as missing:
        identity.rows("liked", np.array([1, 9, 5]))
    assert str(missing.value) == "liked: movie 9 is not in this model (movie ids are 0..3)"
    with pytest.raises(errors.InvalidArgument) as malformed:
        identity.rows("liked", np.array([1, -4]))
    assert malformed.value.description == "movie ids must be >= 0, got -4"


def test_ids_in_any_order_map_to_their_rows() -> None:
    c = Catalogue(np.array([30, 10, 20]))
    np.testing.assert_array_equal(c.rows("ids", np.array([10, 20, 30, 10])), [1, 2, 0, 1])
    assert c.row("id", 30) == 0
    with pytest.raises(errors.NotFound):
        c.rows("ids", np.array([15]))


def test_no_ids_are_no_rows_fit_to_index_with() -> None:
    for c in (Catalogue.identity(3), Catalogue(np.array([30, 10, 20]))):
        rows = c.rows("exclude_movie_ids", [])  # type: ignore[arg-type]
        assert rows.dtype == np.int64 and np.zeros(3)[rows].size == 0


def test_ids_and_likes_are_int64_whatever_they_come_as() -> None:
    c = Catalogue(np.array([7, 3], np.int32), num_likes=np.array([2, 5], np.int16))
    assert (c.movie_ids.dtype, c.num_likes.dtype) == (np.int64, np.int64)
    assert Catalogue(np.array([7, 3])).num_likes.dtype == np.int64
    np.testing.assert_array_equal(Catalogue(np.array([7, 3])).num_likes, [0, 0])


def test_a_catalogue_without_titles_keeps_none(tmp_path: Path) -> None:
    Catalogue(np.array([8, 2, 5]), genres=np.array(["Drama", "", "War"])).save(tmp_path)
    loaded = Catalogue.load(tmp_path, 3)
    assert loaded.titles is None and loaded.title(1) == ""
    assert [loaded.genre_list(r) for r in range(3)] == [["Drama"], [], ["War"]]


def test_search_refusals_and_a_limit_of_zero(catalogue: Catalogue) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        catalogue.search("--", 5)
    assert (exc.value.field, exc.value.description) == (
        "query",
        "must hold at least one letter or digit",
    )
    with pytest.raises(errors.InvalidArgument) as exc:
        catalogue.search("toy", -1)
    assert (exc.value.field, exc.value.description) == ("limit", "must be >= 0, got -1")
    assert catalogue.search("toy", 0) == []
