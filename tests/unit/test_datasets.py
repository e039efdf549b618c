"""Datasets: each refusal names its chunk, row and column; sparse rows; the versioned store."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from movie_embeddings_server import errors, store
from movie_embeddings_server.datasets import DatasetBuilder, DatasetStore, StoredDataset
from movie_embeddings_server.versions import DATASETS_DIR


def _builder(max_ratings: int = 1000) -> DatasetBuilder:
    return DatasetBuilder("films", "test data", max_ratings)


def _small() -> StoredDataset:
    b = _builder()
    b.add_movies(1, [30, 10], ["Thirty (1990)", "Ten (1980)"], ["Drama", "Comedy|Drama"])
    b.add_ratings(2, [7, 7, 5], [10, 20, 10], [4.0, 2.5, 5.0], [100, 200, 300])
    b.add_watchers(3, [5, 7], [31.0, 45.0], [2, 3])
    return b.build()


def _refused(call: Any) -> errors.InvalidArgument:
    with pytest.raises(errors.InvalidArgument) as exc:
        call()
    return exc.value


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("add", "field", "bound"),
    [
        (lambda b: b.add_ratings(1, [1, -2], [1, 2], [3, 4]), "ratings.watcher_ids[1]", ">= 0"),
        (
            lambda b: b.add_ratings(1, [1, 2, 3], [1, 2, -5], [3, 4, 5]),
            "ratings.movie_ids[2]",
            ">= 0",
        ),
        (lambda b: b.add_ratings(1, [1, 2], [1, 2], [NAN, 4]), "ratings.ratings[0]", "finite"),
        (lambda b: b.add_ratings(1, [1, 2], [1, 2], [3, -INF]), "ratings.ratings[1]", "finite"),
        (
            lambda b: b.add_ratings(1, [1, 2, 3], [1, 2], [3, 4, 5]),
            "ratings.movie_ids[2]",
            "length",
        ),
        (lambda b: b.add_ratings(1, [1, 2], [1, 2], [3, 4, 5]), "ratings.ratings[2]", "length"),
        (lambda b: b.add_ratings(1, [1, 2], [1, 2], [3, 4], [9]), "ratings.timestamps[1]", "none"),
        (lambda b: b.add_watchers(1, [1, -1]), "watchers.watcher_ids[1]", ">= 0"),
        (lambda b: b.add_watchers(1, [1, 2], [20, 151]), "watchers.age_years[1]", "0..150"),
        (lambda b: b.add_watchers(1, [1, 2], [-1, 20]), "watchers.age_years[0]", "0..150"),
        (lambda b: b.add_watchers(1, [1, 2], [20, NAN]), "watchers.age_years[1]", "0..150"),
        (lambda b: b.add_watchers(1, [1, 2], [], [0, -1]), "watchers.education[1]", ">= 0"),
        (lambda b: b.add_watchers(1, [1, 2], [30]), "watchers.age_years[1]", "(or none)"),
        (lambda b: b.add_movies(1, [1, -3], ["a", "b"]), "movies.movie_ids[1]", "0..2147483647"),
        (lambda b: b.add_movies(1, [2**31]), "movies.movie_ids[0]", "0..2147483647"),
        (lambda b: b.add_movies(1, [1, 2], ["a"]), "movies.titles[1]", "length"),
        (lambda b: b.add_movies(1, [1], [], ["A", "B"]), "movies.genres[1]", "length"),
    ],
)
def test_each_bad_value_is_refused_naming_chunk_row_and_column(add, field, bound) -> None:
    exc = _refused(lambda: add(_builder()))
    assert exc.field == f"chunks[1].{field}"
    assert bound in exc.description


def test_the_refusal_quotes_the_bad_value() -> None:
    exc = _refused(lambda: _builder().add_ratings(4, [1, 2], [1, 2], [3, NAN]))
    assert str(exc) == "chunks[4].ratings.ratings[1]: must be finite, got nan"


def test_timestamps_are_given_with_every_rating_or_none() -> None:
    b = _builder()
    b.add_ratings(1, [1], [1], [3.0], [100])
    b.add_ratings(2, [], [], [])  # an empty chunk decides nothing
    exc = _refused(lambda: b.add_ratings(3, [2], [2], [4.0]))
    assert exc.field == "chunks[3].ratings.timestamps"
    assert "chunks[1]" in exc.description


def test_a_watcher_described_twice_is_refused_at_the_second_description() -> None:
    b = _builder()
    b.add_ratings(1, [1, 2, 3], [1, 1, 1], [3, 3, 3])
    b.add_watchers(2, [1, 2], [20, 30])
    b.add_watchers(3, [3, 2], [40, 30])
    exc = _refused(b.build)
    assert exc.field == "chunks[3].watchers.watcher_ids[1]"
    assert "chunks[2].watchers.watcher_ids[1]" in exc.description


def test_a_watcher_described_twice_in_one_chunk_is_refused() -> None:
    b = _builder()
    b.add_ratings(1, [1], [1], [3])
    b.add_watchers(2, [4, 1, 4])
    assert _refused(b.build).field == "chunks[2].watchers.watcher_ids[2]"


def test_a_movie_listed_twice_with_two_titles_is_refused() -> None:
    b = _builder()
    b.add_ratings(1, [1], [1], [3])
    b.add_movies(2, [1, 2, 3], ["One", "Two", "Three"])
    b.add_movies(3, [3, 2], ["Three", "Deux"])
    exc = _refused(b.build)
    assert exc.field == "chunks[3].movies.titles[1]"
    assert "'Deux'" in exc.description and "'Two'" in exc.description
    assert "chunks[2].movies.titles[1]" in exc.description


def test_a_movie_listed_twice_with_two_genres_is_refused() -> None:
    b = _builder()
    b.add_ratings(1, [1], [1], [3])
    b.add_movies(2, [1, 1], ["One", "One"], ["Drama", "Comedy"])
    assert _refused(b.build).field == "chunks[2].movies.genres[1]"


def test_a_movie_listed_again_the_same_or_without_a_title_is_one_movie() -> None:
    b = _builder()
    b.add_ratings(1, [1], [5], [3])
    b.add_movies(2, [5, 6], ["Five", "Six"], ["A", "B"])
    b.add_movies(3, [6, 5], ["Six", ""])  # "" and no genres column: not given here
    ds = b.build()
    assert ds.movie_ids.tolist() == [5, 6]
    assert ds.titles.tolist() == ["Five", "Six"]
    assert ds.genres.tolist() == ["A", "B"]


def test_header_name_and_description_are_checked() -> None:
    exc = _refused(lambda: DatasetBuilder("Bad Name", "", 10))
    assert exc.field == "chunks[0].header.name"
    exc = _refused(lambda: DatasetBuilder("ok", "x" * 4097, 10))
    assert exc.field == "chunks[0].header.description"
    assert "4096" in exc.description


def test_no_ratings_at_all_is_refused() -> None:
    b = _builder()
    b.add_movies(1, [1], ["One"])
    b.add_ratings(2, [], [], [])
    exc = _refused(b.build)
    assert exc.field == "chunks"
    assert "no ratings" in exc.description


def test_more_ratings_than_the_limit_are_refused_as_soon_as_they_pass_it() -> None:
    b = _builder(max_ratings=5)
    b.add_ratings(1, [1, 2, 3], [1, 1, 1], [3, 3, 3])
    b.add_ratings(2, [4, 5], [1, 1], [3, 3])  # exactly the limit
    with pytest.raises(errors.ResourceExhausted, match=r"chunks\[3\].*5 ratings"):
        b.add_ratings(3, [6], [1], [3])


def test_a_pair_rated_twice_keeps_its_last_rating() -> None:
    b = _builder()
    b.add_ratings(1, [1, 1, 2], [10, 20, 10], [1.0, 2.0, 3.0], [1, 2, 3])
    b.add_ratings(2, [1, 2, 1], [10, 30, 10], [4.0, 5.0, 4.5], [4, 5, 6])
    ds = b.build()
    r = ds.ratings
    assert r.watcher_ids.tolist() == [1, 2]
    assert r.indptr.tolist() == [0, 2, 4]
    assert ds.movie_ids[r.movie_rows].tolist() == [10, 20, 10, 30]
    assert r.values.tolist() == [4.5, 2.0, 3.0, 5.0]
    assert r.timestamps is not None and r.timestamps.tolist() == [6, 2, 3, 5]
    assert ds.info["num_duplicate_ratings"] == 2
    assert ds.info["num_ratings"] == 4


def test_features_follow_the_watchers_who_rated_and_the_others_are_dropped() -> None:
    b = _builder()
    b.add_ratings(1, [9, 3, 5], [1, 1, 1], [3, 3, 3])
    b.add_watchers(2, [5, 8, 3], [50, 80, 30])  # 8 rated nothing
    b.add_watchers(3, [4], [], [2])  # nor did 4
    b.add_watchers(4, [9], [], [1])
    ds = b.build()
    assert ds.ratings.watcher_ids.tolist() == [3, 5, 9]
    np.testing.assert_array_equal(ds.age_years, [30, 50, np.nan])
    np.testing.assert_array_equal(ds.education, [np.nan, np.nan, 1])
    assert ds.info["num_dropped_watchers"] == 2
    assert ds.info["has_age"] and ds.info["has_education"]


def test_the_info_counts_the_dataset() -> None:
    info = _small().info
    assert info == {
        "name": "films",
        "description": "test data",
        "num_ratings": 3,
        "num_watchers": 2,
        "num_movies": 3,  # 10, 20 rated; 30 only listed
        "has_age": True,
        "has_education": True,
        "min_rating": 2.5,
        "max_rating": 5.0,
        "num_titled_movies": 2,
        "num_duplicate_ratings": 0,
        "num_dropped_watchers": 0,
    }


def test_the_catalogue_is_every_movie_rated_or_listed_by_id() -> None:
    ds = _small()
    assert ds.movie_ids.dtype == np.int64
    assert ds.movie_ids.tolist() == [10, 20, 30]
    assert ds.titles.tolist() == ["Ten (1980)", "", "Thirty (1990)"]
    assert ds.genres.tolist() == ["Comedy|Drama", "", "Drama"]


def test_without_watcher_chunks_no_feature_is_present() -> None:
    b = _builder()
    b.add_ratings(1, [1], [1], [3])
    ds = b.build()
    assert not ds.info["has_age"] and not ds.info["has_education"]
    assert np.isnan(ds.age_years).all() and ds.ratings.timestamps is None


def _brute_force(watchers, movies, values) -> dict[tuple[int, int], float]:
    last = {}
    for w, m, v in zip(watchers, movies, values, strict=True):
        last[int(w), int(m)] = float(v)
    return last


def _sparse(ds: StoredDataset) -> dict[tuple[int, int], float]:
    r = ds.ratings
    assert np.all(np.diff(r.watcher_ids) > 0)
    assert r.indptr.dtype == np.int64 and r.movie_rows.dtype == np.int32
    assert r.values.dtype == np.float32
    out = {}
    for i, w in enumerate(r.watcher_ids.tolist()):
        rows = r.movie_rows[r.indptr[i] : r.indptr[i + 1]]
        assert np.all(np.diff(rows) > 0)  # each movie once, ascending
        for row, v in zip(rows.tolist(), r.values[r.indptr[i] : r.indptr[i + 1]], strict=True):
            out[w, int(ds.movie_ids[row])] = float(v)
    return out


@pytest.mark.parametrize(
    ("max_watcher", "max_movie"),
    [
        (50, 40),  # small ids: the catalogue by table, pairs by one packed sort
        (50, 2**31 - 1),  # sparse movie ids: the catalogue by search
        (2**62, 40),  # huge watcher ids: pairs by lexsort
    ],
)
def test_sparse_rows_match_a_brute_force_dict(max_watcher: int, max_movie: int) -> None:
    rng = np.random.default_rng(max_movie)
    n = 3000
    watcher_pool = rng.integers(0, max_watcher, 60, endpoint=True)
    movie_pool = rng.integers(0, max_movie, 45, endpoint=True)
    watchers = rng.choice(watcher_pool, n)
    movies = rng.choice(movie_pool, n)
    values = rng.integers(1, 11, n) / 2
    b = _builder(max_ratings=n)
    for chunk, start in enumerate(range(0, n, 700), start=1):
        s = slice(start, start + 700)
        b.add_ratings(chunk, watchers[s], movies[s], values[s])
    ds = b.build()
    expected = _brute_force(watchers, movies, values)
    assert _sparse(ds) == expected
    assert ds.info["num_duplicate_ratings"] == n - len(expected)
    assert ds.movie_ids.tolist() == sorted({m for _, m in expected})


def test_store_round_trip(tmp_path: Path) -> None:
    s = DatasetStore(tmp_path)
    built = _small()
    info = s.save(built)
    assert (info["name"], info["version"]) == ("films", 1)
    assert {k: info[k] for k in built.info} == built.info
    path = tmp_path / DATASETS_DIR / "films" / "1"
    assert info["size_bytes"] == sum(p.stat().st_size for p in path.iterdir())
    assert json.loads((path / "metadata.json").read_text()) == info
    loaded = s.load("films", 1)
    assert loaded.info == info and loaded.version == 1
    for key in ("movie_ids", "titles", "genres", "age_years", "education"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(built, key))
    for key in ("watcher_ids", "indptr", "movie_rows", "values", "timestamps"):
        np.testing.assert_array_equal(getattr(loaded.ratings, key), getattr(built.ratings, key))
    assert loaded.titles.dtype.kind == "U"
    assert s.list() == [info] and s.resolve("films", 0) == info


def test_versions_number_from_one_and_zero_is_the_newest(tmp_path: Path) -> None:
    s = DatasetStore(tmp_path)
    assert [s.save(_small())["version"] for _ in range(3)] == [1, 2, 3]
    assert s.resolve("films", 0)["version"] == 3
    assert s.load("films", 0).version == 3
    with pytest.raises(errors.NotFound, match="no version 7"):
        s.resolve("films", 7)
    with pytest.raises(errors.NotFound):
        s.load("films", 7)
    with pytest.raises(errors.NotFound, match="'nope'"):
        s.resolve("nope", 0)
    with pytest.raises(errors.NotFound, match="'nope'"):
        s.load("nope", 0)
    assert _refused(lambda: s.resolve("films", -1)).field == "dataset.version"
    assert _refused(lambda: s.resolve("../x", 0)).field == "dataset.name"


def test_delete_one_version_or_all_and_numbers_are_not_reused(tmp_path: Path) -> None:
    s = DatasetStore(tmp_path)
    for _ in range(3):
        s.save(_small())
    (gone,) = s.delete("films", 3)
    assert gone["version"] == 3
    assert [i["version"] for i in s.list("films")] == [1, 2]
    assert s.save(_small())["version"] == 4  # 3 named data that is gone
    assert [i["version"] for i in s.delete("films", 0)] == [1, 2, 4]
    assert s.list() == []
    with pytest.raises(errors.NotFound):
        s.delete("films", 0)
    with pytest.raises(errors.NotFound):
        s.load("films", 2)
    assert s.save(_small())["version"] == 5
    # Nothing of the deleted versions is left but their empty markers.
    parent = tmp_path / DATASETS_DIR / "films"
    assert not any(p.is_file() for d in parent.glob(".deleted-*") for p in d.iterdir())


def test_another_store_on_the_same_directory_sees_saves_and_deletes(tmp_path: Path) -> None:
    writer, reader = DatasetStore(tmp_path), DatasetStore(tmp_path)
    info = writer.save(_small())
    assert reader.list() == []
    assert reader.load_new() == 1
    assert reader.list() == [info]
    assert reader.load_new() == 0
    writer.delete("films", 1)
    assert reader.load_new() == 0
    assert reader.list() == []
    with pytest.raises(errors.NotFound):
        reader.resolve("films", 1)


def test_a_restarted_store_keeps_its_datasets(tmp_path: Path) -> None:
    info = DatasetStore(tmp_path).save(_small())
    again = DatasetStore(tmp_path)
    assert again.load_new() == 1
    assert again.list() == [info]


def test_a_damaged_version_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = DatasetStore(tmp_path)
    s.save(_small())
    s.save(_small())
    (tmp_path / DATASETS_DIR / "films" / "2" / "metadata.json").write_text("{not json")
    fresh = DatasetStore(tmp_path)
    assert fresh.load_new() == 1
    assert [i["version"] for i in fresh.list()] == [1]
    assert "damaged dataset version" in caplog.text
    caplog.clear()
    assert fresh.load_new() == 0
    assert "damaged" not in caplog.text  # said once


def test_nothing_is_left_after_a_failed_build_or_save(tmp_path: Path) -> None:
    s = DatasetStore(tmp_path)
    b = _builder()
    b.add_ratings(1, [1], [1], [3])
    b.add_watchers(2, [1, 1])
    with pytest.raises(errors.InvalidArgument):
        b.build()
    good = _small()
    # An array numpy cannot store without pickling: the write fails half way.
    bad = dataclasses.replace(good, titles=np.array([object()] * 3))
    with pytest.raises(ValueError):
        s.save(bad)
    assert list((tmp_path / DATASETS_DIR / "films").iterdir()) == []
    assert s.list() == [] and DatasetStore(tmp_path).load_new() == 0


def test_the_model_store_leaves_the_datasets_alone(tmp_path: Path) -> None:
    DatasetStore(tmp_path).save(_small())
    models = store.Store(tmp_path)
    assert models.load_new() == 0
    assert models.is_empty()
    exc = _refused(lambda: store.check_name("model_name", DATASETS_DIR))
    assert exc.field == "model_name" and "reserved" in exc.description


def test_ratings_may_be_any_finite_scale() -> None:
    b = _builder()
    b.add_ratings(1, [1, 2], [1, 1], [-10.0, 1e30])
    info = b.build().info
    assert (info["min_rating"], info["max_rating"]) == (-10.0, float(np.float32(1e30)))
