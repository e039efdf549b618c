"""Reading ratings, catalogues and watchers from MovieLens directories and CSV, TSV and Parquet
files the tests write, into the SDK's columns."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from movie_embeddings.datasets import movielens_format, read_movielens, read_table

# --- MovieLens latest / 20M / 25M / 32M: ratings.csv + movies.csv ---------------------------

MOVIES_CSV = '''movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
11,"American President, The (1995)",Comedy|Drama|Romance
73,"Misérables, Les (1995)",Drama|War
2000,"""Great Performances"" Cats (1998)",Musical
99999,"Godfather: Part II, The (1974)",(no genres listed)
'''


def _latest(directory: Path) -> Path:
    directory.mkdir()
    (directory / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "1,73,3.5,964981247\n"
        "7,2000,0.5,1100000000\n"
        "123456789012,99999,5.0,1500000000\n"
    )
    (directory / "movies.csv").write_text(MOVIES_CSV, encoding="utf-8")
    return directory


def test_movielens_latest(tmp_path: Path) -> None:
    data = read_movielens(_latest(tmp_path / "ml-latest-small"))
    r = data.ratings
    assert r.watcher_ids.dtype == np.int64
    assert r.movie_ids.dtype == np.int32
    assert r.ratings.dtype == np.float32
    assert r.timestamps is not None and r.timestamps.dtype == np.int64
    assert r.watcher_ids.tolist() == [1, 1, 7, 123456789012]
    assert r.movie_ids.tolist() == [1, 73, 2000, 99999]
    assert r.ratings.tolist() == [4.0, 3.5, 0.5, 5.0]
    assert r.timestamps.tolist() == [964982703, 964981247, 1100000000, 1500000000]
    m = data.movies
    assert m is not None and m.titles is not None and m.genres is not None
    assert m.movie_ids.tolist() == [1, 11, 73, 2000, 99999]
    assert m.titles.tolist() == [
        "Toy Story (1995)",
        "American President, The (1995)",
        "Misérables, Les (1995)",
        '"Great Performances" Cats (1998)',
        "Godfather: Part II, The (1974)",
    ]
    assert m.genres.tolist() == [
        "Adventure|Animation|Children|Comedy|Fantasy",
        "Comedy|Drama|Romance",
        "Drama|War",
        "Musical",
        "",  # "(no genres listed)"
    ]
    assert data.watchers is None  # no demographics in these releases


def test_movielens_without_a_catalogue_has_ratings_only(tmp_path: Path) -> None:
    directory = _latest(tmp_path / "ml")
    (directory / "movies.csv").unlink()
    data = read_movielens(directory, "movielens")
    assert len(data.ratings) == 4
    assert data.movies is None


def test_progress_counts_every_byte_of_every_file(tmp_path: Path) -> None:
    directory = _latest(tmp_path / "ml")
    calls: list[tuple[int, int]] = []
    read_movielens(directory, progress=lambda done, total: calls.append((done, total)))
    total = sum(p.stat().st_size for p in directory.iterdir())
    assert calls[-1] == (total, total)
    assert {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert done == sorted(done)


# --- MovieLens 100k: u.data, u.item (Latin-1, genre flags), u.user ---------------------------


def _flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


def _ml_100k(directory: Path) -> Path:
    directory.mkdir()
    (directory / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    (directory / "u.item").write_bytes(
        (
            f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya|{_flags(5)}\n"
            f"302|Misérables, Les (1995)|01-Jan-1995||http://x|{_flags(1, 5, 17)}\n"
            f"267|unknown||||{_flags(0)}\n"
        ).encode("latin-1")
    )
    (directory / "u.user").write_text("196|49|M|writer|55105\n186|39|F|executive|00000\n")
    return directory


def test_movielens_100k(tmp_path: Path) -> None:
    directory = _ml_100k(tmp_path / "ml-100k")
    assert movielens_format(directory) == "movielens-100k"
    data = read_movielens(directory)
    r = data.ratings
    assert (r.watcher_ids.tolist(), r.movie_ids.tolist()) == ([196, 186], [242, 302])
    assert r.ratings.tolist() == [3.0, 3.0]
    assert r.timestamps is not None and r.timestamps.tolist() == [881250949, 891717742]
    m = data.movies
    assert m is not None and m.titles is not None and m.genres is not None
    assert m.movie_ids.tolist() == [242, 302, 267]
    assert m.titles.tolist() == ["Kolya (1996)", "Misérables, Les (1995)", "unknown"]
    assert m.genres.tolist() == ["Comedy", "Action|Comedy|War", ""]  # the "unknown" flag: none
    w = data.watchers
    assert w is not None and w.age_years is not None
    assert w.watcher_ids.tolist() == [196, 186]
    assert w.age_years.tolist() == [49.0, 39.0]
    assert w.education is None


# --- MovieLens 1M / 10M: "::"-separated .dat files ---------------------------------------------


def _ml_1m(directory: Path, encoding: str = "latin-1", users: bool = True) -> Path:
    directory.mkdir()
    (directory / "ratings.dat").write_text("1::1193::5::978300760\n2::2355::3.5::978824291\n")
    (directory / "movies.dat").write_bytes(
        (
            "1::Toy Story (1995)::Animation|Children's|Comedy\n"
            "260::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
            "1193::Misérables, Les (1995)::Drama\n"
        ).encode(encoding)
    )
    if users:
        (directory / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072-1234\n")
    return directory


def test_movielens_1m_latin1(tmp_path: Path) -> None:
    directory = _ml_1m(tmp_path / "ml-1m")
    assert movielens_format(directory) == "movielens-1m"
    data = read_movielens(directory)
    r = data.ratings
    assert (r.watcher_ids.tolist(), r.movie_ids.tolist()) == ([1, 2], [1193, 2355])
    assert r.ratings.tolist() == [5.0, 3.5]
    assert r.timestamps is not None and r.timestamps.tolist() == [978300760, 978824291]
    m = data.movies
    assert m is not None and m.titles is not None and m.genres is not None
    assert m.movie_ids.tolist() == [1, 260, 1193]
    assert m.titles.tolist() == [
        "Toy Story (1995)",
        "Star Wars: Episode IV - A New Hope (1977)",
        "Misérables, Les (1995)",
    ]
    assert m.genres.tolist() == ["Animation|Children's|Comedy", "Action|Sci-Fi", "Drama"]
    w = data.watchers
    assert w is not None and w.age_years is not None
    assert w.watcher_ids.tolist() == [1, 2]
    assert w.age_years.tolist() == [1.0, 56.0]  # 1M's bracket codes, kept as they are


def test_movielens_10m_utf8_without_users(tmp_path: Path) -> None:
    data = read_movielens(_ml_1m(tmp_path / "ml-10M100K", "utf-8", users=False))
    assert data.movies is not None and data.movies.titles is not None
    assert data.movies.titles[2] == "Misérables, Les (1995)"
    assert data.watchers is None


def test_a_malformed_dat_line_is_named(tmp_path: Path) -> None:
    directory = _ml_1m(tmp_path / "ml-1m")
    (directory / "movies.dat").write_text("1::Toy Story (1995)::Comedy\n2::Jumanji (1995)\n")
    with pytest.raises(ValueError, match=r"movies\.dat: line 2"):
        read_movielens(directory)


# --- format detection ----------------------------------------------------------------------


def test_auto_detection(tmp_path: Path) -> None:
    assert movielens_format(_latest(tmp_path / "a")) == "movielens"
    assert movielens_format(_ml_100k(tmp_path / "b")) == "movielens-100k"
    assert movielens_format(_ml_1m(tmp_path / "c")) == "movielens-1m"
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=r"not a MovieLens directory.*u\.data"):
        read_movielens(tmp_path / "d")


def test_an_explicit_format_that_does_not_fit_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_movielens(_latest(tmp_path / "ml"), "movielens-100k")
    with pytest.raises(ValueError, match="format must be one of"):
        read_movielens(tmp_path / "ml", "csv")


# --- any CSV / TSV / Parquet ---------------------------------------------------------------


def test_csv_with_header_and_side_files(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("who,what,stars,when,extra\n5,10,4.5,100,x\n6,11,2,200,y\n")
    (tmp_path / "m.csv").write_text(
        'what,name,kinds\n10,"Heat, The (1995)",Action|Crime\n11,"Amélie (2001)",\n',
        encoding="utf-8",
    )
    (tmp_path / "w.csv").write_text("user,years,school\n5,31,2\n6,,\n")
    data = read_table(
        tmp_path / "r.csv",
        watcher_col="who",
        movie_col="what",
        rating_col="stars",
        timestamp_col="when",
        movies=tmp_path / "m.csv",  # its id column: movie_col's name, as none is given
        title_col="name",
        genres_col="kinds",
        watchers=tmp_path / "w.csv",
        watcher_id_col="user",
        age_col="years",
        education_col="school",
    )
    r = data.ratings
    assert (r.watcher_ids.tolist(), r.movie_ids.tolist()) == ([5, 6], [10, 11])
    assert r.ratings.tolist() == [4.5, 2.0]
    assert r.timestamps is not None and r.timestamps.tolist() == [100, 200]
    m = data.movies
    assert m is not None and m.titles is not None and m.genres is not None
    assert m.movie_ids.tolist() == [10, 11]
    assert m.titles.tolist() == ["Heat, The (1995)", "Amélie (2001)"]
    assert m.genres.tolist() == ["Action|Crime", ""]
    w = data.watchers
    assert w is not None and w.age_years is not None and w.education is not None
    assert w.age_years[0] == 31.0 and np.isnan(w.age_years[1])  # missing = unknown
    assert w.education[0] == 2.0 and np.isnan(w.education[1])


def test_headerless_tsv_by_position(tmp_path: Path) -> None:
    (tmp_path / "ratings.tsv").write_text("3\t9\t1.0\n4\t8\t0.0\n")
    (tmp_path / "movies.tsv").write_text("9\tNine\n8\tEight\n")
    data = read_table(
        tmp_path / "ratings.tsv",
        watcher_col=0,
        movie_col="1",  # a string of digits is a position too
        rating_col=2,
        movies=tmp_path / "movies.tsv",
        movie_id_col=0,
        title_col=1,
    )
    assert data.ratings.watcher_ids.tolist() == [3, 4]
    assert data.ratings.movie_ids.tolist() == [9, 8]
    assert data.ratings.timestamps is None
    assert data.movies is not None and data.movies.titles is not None
    assert data.movies.movie_ids.tolist() == [9, 8]
    assert data.movies.titles.tolist() == ["Nine", "Eight"]


def test_separator_is_guessed_when_the_suffix_does_not_tell(tmp_path: Path) -> None:
    (tmp_path / "ratings.txt").write_text("u;m;r\n1;2;3\n4;5;6\n")
    data = read_table(tmp_path / "ratings.txt", watcher_col="u", movie_col="m", rating_col="r")
    assert data.ratings.ratings.tolist() == [3.0, 6.0]
    (tmp_path / "odd.txt").write_text("u|m|r\n1|2|3\n")
    data = read_table(tmp_path / "odd.txt", watcher_col="u", movie_col="m", rating_col="r", sep="|")
    assert data.ratings.movie_ids.tolist() == [2]


def test_parquet(tmp_path: Path) -> None:
    when = pa.array([1_600_000_000_000_000, 1_600_000_001_500_000], pa.timestamp("us"))
    pq.write_table(
        pa.table(
            {
                "user": pa.array([1, 2], pa.int32()),
                "item": pa.array([7.0, 8.0]),  # whole floats are ids too
                "score": pa.array([1, 0], pa.int8()),
                "at": when,
            }
        ),
        tmp_path / "r.parquet",
    )
    pq.write_table(
        pa.table({"item": [7, 8], "name": ["Sept", None], "g": ["A|B", "C"]}), tmp_path / "m.pq"
    )
    data = read_table(
        tmp_path / "r.parquet",
        watcher_col="user",
        movie_col="item",
        rating_col="score",
        timestamp_col="at",
        movies=tmp_path / "m.pq",
        title_col="name",
        genres_col="g",
    )
    r = data.ratings
    assert (r.watcher_ids.dtype, r.movie_ids.dtype, r.ratings.dtype) == (
        np.int64,
        np.int32,
        np.float32,
    )
    assert r.movie_ids.tolist() == [7, 8]
    assert r.timestamps is not None and r.timestamps.tolist() == [1_600_000_000, 1_600_000_001]
    m = data.movies
    assert m is not None and m.titles is not None and m.genres is not None
    assert m.titles.tolist() == ["Sept", ""]
    assert m.genres.tolist() == ["A|B", "C"]


# --- refusals ------------------------------------------------------------------------------


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user,movie,rating\n1,2,3\n")
    with pytest.raises(ValueError, match=r"r\.csv has no column 'stars'.*\['user', 'movie'"):
        read_table(tmp_path / "r.csv", watcher_col="user", movie_col="movie", rating_col="stars")
    pq.write_table(pa.table({"user": [1], "movie": [2]}), tmp_path / "r.parquet")
    with pytest.raises(ValueError, match=r"no column 'rating'"):
        read_table(
            tmp_path / "r.parquet", watcher_col="user", movie_col="movie", rating_col="rating"
        )


def test_a_missing_position_is_named(tmp_path: Path) -> None:
    (tmp_path / "r.tsv").write_text("1\t2\t3\n")
    with pytest.raises(ValueError, match=r"no column '3'"):
        read_table(tmp_path / "r.tsv", watcher_col=0, movie_col=1, rating_col=3)


def test_names_and_positions_do_not_mix(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user,movie,rating\n1,2,3\n")
    with pytest.raises(ValueError, match="not both"):
        read_table(tmp_path / "r.csv", watcher_col="user", movie_col=1, rating_col="rating")


def test_a_missing_id_is_named_with_its_row(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user,movie,rating\n1,2,3\n1,,4\n")
    with pytest.raises(ValueError, match=r"r\.csv column 'movie' has no value in data row 2"):
        read_table(tmp_path / "r.csv", watcher_col="user", movie_col="movie", rating_col="rating")


def test_a_bad_value_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user,movie,rating\n1,2,3\n1,abc,4\n")
    with pytest.raises(ValueError, match=r"r\.csv: .*abc"):
        read_table(tmp_path / "r.csv", watcher_col="user", movie_col="movie", rating_col="rating")


def test_without_pyarrow_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "r.csv").write_text("u,m,r\n1,2,3\n")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'movie-embeddings\[data\]'"):
        read_table(tmp_path / "r.csv", watcher_col="u", movie_col="m", rating_col="r")
