"""Datasets: each refusal names its chunk, row and column; sparse rows; the versioned store."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from movie_embeddings_server import errors
from movie_embeddings_server.store import models as store
from movie_embeddings_server.store.datasets import DatasetBuilder, DatasetStore, StoredDataset
from movie_embeddings_server.store.staged import Distinct
from movie_embeddings_server.store.versions import DATASETS_DIR


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
    assert exc.description == (
        "movie 2 is listed with 'Deux' here but with 'Two' at chunks[2].movies.titles[1]"
    )


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
        (2 * 10**14, 40),  # just past what a packed int64 key holds: lexsort too
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


# --- exact refusals, inclusive bounds, dtypes, and the store's edges ----------------------


def _exceeds(b: DatasetBuilder) -> None:
    b.add_ratings(1, [1, 2, 3], [1, 1, 1], [3, 3, 3])
    b.add_ratings(3, [4, 5, 6], [1, 1, 1], [3, 3, 3])


@pytest.mark.parametrize(
    ("add", "field", "description"),
    [
        (
            lambda b: b.add_ratings(1, [1, -2], [1, 2], [3, 4]),
            "chunks[1].ratings.watcher_ids[1]",
            "must be >= 0, got -2",
        ),
        (
            lambda b: b.add_ratings(1, [1, 2], [-5, 2], [3, 4]),
            "chunks[1].ratings.movie_ids[0]",
            "must be >= 0, got -5",
        ),
        (
            lambda b: b.add_watchers(2, [3, -1]),
            "chunks[2].watchers.watcher_ids[1]",
            "must be >= 0, got -1",
        ),
        (
            lambda b: b.add_watchers(2, [3, 4], [], [1, -3]),
            "chunks[2].watchers.education[1]",
            "must be >= 0, got -3",
        ),
        (
            lambda b: b.add_watchers(2, [3, 4], [30]),
            "chunks[2].watchers.age_years[1]",
            "has 1 values where watcher_ids has 2: the columns of a chunk have one length "
            "(or none)",
        ),
        (
            lambda b: b.add_ratings(1, [1, 2], [1, 2], [3, 4, 5]),
            "chunks[1].ratings.ratings[2]",
            "has 3 values where watcher_ids has 2: the columns of a chunk have one length",
        ),
        (
            lambda b: (b.add_ratings(1, [1], [1], [3], [10]), b.add_ratings(3, [2], [2], [4])),
            "chunks[3].ratings.timestamps",
            "empty here but given in chunks[1]: give timestamps with every rating or with none",
        ),
        (
            lambda b: (b.add_ratings(1, [1], [1], [3]), b.add_ratings(3, [2], [2], [4], [10])),
            "chunks[3].ratings.timestamps",
            "given here but empty in chunks[1]: give timestamps with every rating or with none",
        ),
        (
            lambda b: b.build(),
            "chunks",
            "no ratings: an import needs at least one rating",
        ),
    ],
)
def test_every_refusal_says_exactly_why(add, field: str, description: str) -> None:
    exc = _refused(lambda: add(_builder()))
    assert (exc.field, exc.description) == (field, description)


def test_the_ratings_cap_names_the_flag() -> None:
    with pytest.raises(errors.ResourceExhausted) as exc:
        _exceeds(_builder(max_ratings=5))
    assert str(exc.value) == (
        "chunks[3].ratings: the import passes 5 ratings, the server's limit "
        "(serve --max-dataset-ratings)"
    )


def test_bounds_are_inclusive() -> None:
    b = DatasetBuilder("films", "x" * 4096, 10)
    b.add_ratings(1, [0, 1], [0, 2**31 - 1], [3, 4])
    b.add_watchers(2, [0, 1], [0, 150], [0, 0])
    b.add_movies(3, [0, 2**31 - 1])
    ds = b.build()
    assert ds.movie_ids.tolist() == [0, 2**31 - 1]
    assert ds.ratings.watcher_ids.tolist() == [0, 1]
    assert ds.age_years.tolist() == [0, 150] and ds.education.tolist() == [0, 0]


def test_a_built_dataset_has_the_documented_dtypes() -> None:
    ds = _small()
    assert ds.version == 0
    r = ds.ratings
    assert (ds.movie_ids.dtype, r.watcher_ids.dtype, r.indptr.dtype) == (np.int64,) * 3
    assert (r.movie_rows.dtype, r.values.dtype) == (np.int32, np.float32)
    assert r.timestamps is not None and r.timestamps.dtype == np.int64
    assert (ds.age_years.dtype, ds.education.dtype) == (np.float32, np.float32)


def test_a_watcher_described_past_every_rater_is_dropped() -> None:
    b = _builder()
    b.add_ratings(1, [3, 5], [1, 1], [3, 3])
    b.add_watchers(2, [5, 100], [40, 50], [1, 2])
    ds = b.build()
    np.testing.assert_array_equal(ds.age_years, [np.nan, 40])
    assert ds.info["num_dropped_watchers"] == 1


def test_a_listed_movie_without_a_title_has_none() -> None:
    b = _builder()
    b.add_ratings(1, [1], [5], [3])
    b.add_movies(2, [5, 6], ["Five", ""])
    ds = b.build()
    assert ds.titles.tolist() == ["Five", ""] and ds.genres.tolist() == ["", ""]
    assert ds.info["num_titled_movies"] == 1


def test_a_repeat_at_the_first_row_of_a_chunk_is_located_in_that_chunk() -> None:
    b = _builder()
    b.add_ratings(1, [1, 2], [1, 1], [3, 3])
    b.add_watchers(2, [1, 2])
    b.add_watchers(3, [2])
    exc = _refused(b.build)
    assert exc.field == "chunks[3].watchers.watcher_ids[0]"
    assert exc.description == (
        "watcher 2 is described already, at chunks[2].watchers.watcher_ids[1]: describe each "
        "watcher once"
    )


def test_the_first_repeated_watcher_in_the_stream_is_refused_against_its_first_description() -> (
    None
):
    ids = np.random.default_rng(0).integers(0, 5, 20).tolist()  # many repeats of each id
    seen: dict[int, int] = {}  # each id's first description
    for repeat, w in enumerate(ids):
        if w in seen:
            break
        seen[w] = repeat
    b = _builder()
    b.add_ratings(1, [0], [1], [3])
    b.add_watchers(2, ids)
    exc = _refused(b.build)
    assert exc.field == f"chunks[2].watchers.watcher_ids[{repeat}]"
    assert f"at chunks[2].watchers.watcher_ids[{seen[ids[repeat]]}]:" in exc.description


def test_the_first_clash_in_the_stream_is_refused_against_the_listing_before_it() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, 20).tolist()
    titles = [f"T{t}" for t in rng.integers(0, 2, 20)]
    last: dict[int, int] = {}
    clash = before = -1
    for i, (m, title) in enumerate(zip(ids, titles, strict=True)):
        if m in last and titles[last[m]] != title:
            clash, before = i, last[m]
            break
        last[m] = i
    b = _builder()
    b.add_ratings(1, [0], [1], [3])
    b.add_movies(2, ids, titles)
    exc = _refused(b.build)
    assert exc.field == f"chunks[2].movies.titles[{clash}]"
    assert exc.description.endswith(f"at chunks[2].movies.titles[{before}]")


def test_of_two_clashes_the_first_in_the_stream_is_refused() -> None:
    b = _builder()
    b.add_ratings(1, [0], [1], [3])
    b.add_movies(2, [20, 10], ["A", "X"])
    b.add_movies(3, [20], ["B"])  # movie 20's clash comes first in the stream
    b.add_movies(4, [10], ["Y"])
    assert _refused(b.build).field == "chunks[3].movies.titles[0]"


def test_watcher_ids_near_the_int64_limit_keep_their_order() -> None:
    b = _builder()
    b.add_ratings(1, [1, 2**62], [0, 0], [1, 2])
    assert b.build().ratings.watcher_ids.tolist() == [1, 2**62]


def test_a_store_creates_its_directories(tmp_path: Path) -> None:
    DatasetStore(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / DATASETS_DIR).is_dir()


def test_deleting_every_version_of_one_dataset_leaves_the_others(tmp_path: Path) -> None:
    s = DatasetStore(tmp_path)
    s.save(_small())
    s.save(_small())
    films = _small()
    alpha = dataclasses.replace(films, name="alpha", info={**films.info, "name": "alpha"})
    other = s.save(alpha)  # listed before films
    assert [(i["name"], i["version"]) for i in s.delete("films", 0)] == [("films", 1), ("films", 2)]
    assert s.list() == [other]
    assert s.load("alpha", 1).name == "alpha"


def test_store_refusals_say_exactly_why(tmp_path: Path) -> None:
    s = DatasetStore(tmp_path)
    s.save(_small())
    bad = "must match [a-z0-9][a-z0-9_-]{0,63}, got 'Bad!'"
    exc = _refused(lambda: s.list("Bad!"))
    assert (exc.field, exc.description) == ("name", bad)
    assert _refused(lambda: s.load("Bad!", 0)).field == "dataset.name"
    exc = _refused(lambda: s.resolve("films", -3))
    assert exc.description == "must be >= 0 (0 = newest), got -3"
    with pytest.raises(errors.NotFound) as missing:
        s.load("nope", 0)
    assert str(missing.value) == "dataset 'nope' not found"
    with pytest.raises(errors.NotFound) as missing:
        s.load("films", 7)
    assert str(missing.value) == "dataset 'films' has no version 7"


def test_a_stored_dataset_is_read_without_unpickling(tmp_path: Path) -> None:
    s = DatasetStore(tmp_path)
    s.save(_small())
    arrays = tmp_path / DATASETS_DIR / "films" / "1" / "dataset.npz"
    with open(arrays, "wb") as f:  # what a crafted file could hold: an object array
        np.savez(f, allow_pickle=True, movie_ids=np.array([object()]))
    with pytest.raises(ValueError, match="allow_pickle"):
        s.load("films", 1)


def test_a_saved_version_records_its_creation_time_in_utc(tmp_path: Path) -> None:
    info = DatasetStore(tmp_path).save(_small())
    created = datetime.fromisoformat(info["create_time"])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)


def test_polling_adds_every_new_version_past_damage_and_stray_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer, reader = DatasetStore(tmp_path), DatasetStore(tmp_path)
    writer.save(_small())
    assert reader.load_new() == 1
    for _ in range(3):
        writer.save(_small())  # 2, 3, 4
    root = tmp_path / DATASETS_DIR
    (root / "films" / "2" / "metadata.json").write_text("{not json")
    shutil.copytree(root / "films" / "1", root / "AAA" / "1")  # not a dataset name
    with caplog.at_level(logging.WARNING, logger="movie_embeddings_server.store.datasets"):
        assert reader.load_new() == 2
    assert [i["version"] for i in reader.list()] == [1, 3, 4]
    assert caplog.messages == [
        f"skipping damaged dataset version {root / 'films' / '2'}: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)"
    ]


# --- imports staged on disk: sorted a window at a time, nothing left behind ---------------


def _ratings_in(order: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n ratings of 40 watchers (one of them rates 600 times, more than a window) and 50
    movies, many pairs rated twice; by watcher as MovieLens writes them, or shuffled."""
    watchers = np.append(rng.integers(0, 2**40, 39), 7)[rng.integers(0, 40, n)]
    watchers[: n // 5] = 7
    columns = {
        "watcher_ids": watchers,
        "movie_ids": rng.integers(0, 50, n) * 1000,
        "ratings": rng.integers(1, 11, n) / 2,
        "timestamps": np.arange(n),
    }
    rows = np.argsort(watchers, kind="stable") if order == "grouped" else rng.permutation(n)
    return {key: values[rows] for key, values in columns.items()}


@pytest.mark.parametrize("order", ["grouped", "shuffled"])
@pytest.mark.parametrize("window", [100, 10**6])
def test_sorting_in_windows_matches_a_brute_force_dict(order: str, window: int) -> None:
    n = 3000
    r = _ratings_in(order, n, np.random.default_rng(window))
    b = _builder(max_ratings=n)
    b.window_rows = window
    for chunk, start in enumerate(range(0, n, 700), start=1):
        b.add_ratings(chunk, *(values[start : start + 700] for values in r.values()))
    staged = b.staged
    ds = b.build()
    expected = _brute_force(r["watcher_ids"], r["movie_ids"], r["ratings"])
    assert _sparse(ds) == expected
    when = _brute_force(r["watcher_ids"], r["movie_ids"], r["timestamps"])
    assert ds.ratings.timestamps is not None
    rows = np.repeat(ds.ratings.watcher_ids, np.diff(ds.ratings.indptr)).tolist()
    pairs = zip(rows, ds.movie_ids[ds.ratings.movie_rows].tolist(), strict=True)
    assert dict(zip(pairs, ds.ratings.timestamps.tolist(), strict=True)) == when
    assert ds.info["num_duplicate_ratings"] == n - len(expected)
    assert (ds.info["min_rating"], ds.info["max_rating"]) == (0.5, 5.0)
    assert not staged.exists()


def test_distinct_values_are_counted_across_merges() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 10**6, 50_000) for _ in range(5)]
    distinct = Distinct()
    for part in parts:
        distinct.add(part)
    values, counts = distinct.result()
    expected, expected_counts = np.unique(np.concatenate(parts), return_counts=True)
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(counts, expected_counts)


def test_a_builder_stages_in_the_store_and_leaves_nothing_when_refused(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    b = DatasetBuilder("films", "", 100, root=store.root)
    assert b.staged.parent == store.root / "films" and b.staged.name.startswith(".tmp-")
    b.add_ratings(1, [1], [1], [3])
    b.add_watchers(2, [1, 1])
    with pytest.raises(errors.InvalidArgument):
        b.stage()
    assert list((store.root / "films").iterdir()) == []
    b = DatasetBuilder("films", "", 100, root=store.root)
    b.add_ratings(1, [1, 2], [1, 1], [3, 4])
    info = store.commit(b.stage())
    assert (info["version"], info["num_ratings"]) == (1, 2)
    assert [p.name for p in (store.root / "films").iterdir() if p.name != ".lock"] == ["1"]
    assert store.load("films", 1).ratings.watcher_ids.tolist() == [1, 2]
    dropped = DatasetBuilder("films", "", 100, root=store.root)
    dropped.add_ratings(1, [1], [1], [3])
    staged = dropped.staged
    del dropped  # an import that ended without a word: its files go with it
    assert not staged.exists()
