"""Reading ratings, catalogues and watchers from MovieLens directories and CSV, TSV and Parquet
files the tests write, into the SDK's columns."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from movie_embeddings.datasets import (
    FileColumns,
    FileError,
    movielens_format,
    read_movielens,
    read_table,
)

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


# --- format detection ----------------------------------------------------------------------


def test_auto_detection(tmp_path: Path) -> None:
    assert movielens_format(_latest(tmp_path / "a")) == "movielens"
    assert movielens_format(_ml_100k(tmp_path / "b")) == "movielens-100k"
    assert movielens_format(_ml_1m(tmp_path / "c")) == "movielens-1m"
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=r"not a MovieLens directory.*u\.data"):
        read_movielens(tmp_path / "d")


def test_an_explicit_format_that_does_not_fit_fails(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"not a movielens-100k directory \(it has no u\.data"
    ):
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


# --- refusals, in the file's terms ---------------------------------------------------------


def _ratings_csv(path: Path, text: str, **files: Any) -> FileColumns:
    """`text` written to `path` and read with its columns user, movie, rating (and `files`)."""
    path.write_text(text)
    return read_table(path, watcher_col="user", movie_col="movie", rating_col="rating", **files)


@pytest.mark.parametrize(
    ("rows", "line", "column", "problem"),
    [
        ("1,2,3\n1,abc,4\n", 3, "movie", "movie ids must be integers, got 'abc': give a column"),
        ("1,2,3\n1,2,4\n\n\n1,2,x\n", 6, "rating", "ratings must be numbers, got 'x'"),
        ("1,2,3\n1, 7 ,4\n1.5,2,3\n", 4, "user", "watcher ids must be integers, got '1.5'"),
        ("1,2,3\n1,3000000000,4\n", 3, "movie", "movie ids must be at most 2147483647"),
        ("1,2,3\n1,,4\n", 3, "movie", "no value, but every row needs a movie id"),
        ("1,2,3\n\n1,2,3,4\n", 4, None, "has 4 fields where the first line has 3: '1,2,3,4'"),
    ],
    ids=["text-id", "blank-lines-counted", "float-id", "id-past-int32", "no-value", "extra-field"],
)
def test_a_refused_value_names_the_file_line_and_column(
    tmp_path: Path, rows: str, line: int, column: str | None, problem: str
) -> None:
    path = tmp_path / "r.csv"
    with pytest.raises(FileError) as refused:
        _ratings_csv(path, "user,movie,rating\n" + rows)
    error = refused.value
    assert (error.path, error.line, error.column) == (path, line, column)
    where = f"{path}, line {line}" + ("" if column is None else f", column {column!r}")
    assert str(error).startswith(f"{where}: {problem}"), str(error)


def test_ids_that_are_not_integers_say_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("movie,title\ntt0114709,Toy Story\n")
    with pytest.raises(FileError) as refused:
        _ratings_csv(tmp_path / "r.csv", "user,movie,rating\nu1,7,4\n")
    assert str(refused.value) == (
        f"{tmp_path / 'r.csv'}, line 2, column 'user': watcher ids must be integers, got 'u1': "
        "give a column of integer ids, or number the ids first (one integer per distinct id, "
        "the same in every file)"
    )
    with pytest.raises(FileError, match=r"m\.csv, line 2, column 'movie': movie ids must be int"):
        _ratings_csv(tmp_path / "r.csv", "user,movie,rating\n1,7,4\n", movies=tmp_path / "m.csv")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_headerless_files_and_parquet_name_their_columns_their_way(tmp_path: Path) -> None:
    by_position = {"watcher_col": 0, "movie_col": 1, "rating_col": 2}
    with pytest.raises(FileError, match=r"r\.tsv, line 2, column 2: ratings must be numbers"):
        read_table(_write(tmp_path / "r.tsv", "1\t2\t3\n1\t2\t?\n"), **by_position)
    # A header read as data: its line 1 says so.
    with pytest.raises(FileError, match=r"line 1, column 0: .*name the columns by it, not by"):
        read_table(_write(tmp_path / "r.tsv", "u\tm\tr\n1\t2\t3\n"), **by_position)
    pq.write_table(pa.table({"u": [1, 2], "m": [7.0, 7.5], "r": [1, 2]}), tmp_path / "r.parquet")
    with pytest.raises(FileError) as refused:
        read_table(tmp_path / "r.parquet", watcher_col="u", movie_col="m", rating_col="r")
    assert str(refused.value).startswith(
        f"{tmp_path / 'r.parquet'}, row 2, column 'm': movie ids must be integers, got 7.5"
    )


@pytest.mark.parametrize(
    ("layout", "file", "text", "error"),
    [
        (_ml_100k, "u.data", "196\t242\t3\t881250949\n186\t302\tx\t891717742\n",
         r"u\.data, line 2, column 'rating': ratings must be numbers, got 'x'$"),
        (_ml_100k, "u.data", "196\t242\t3\n",
         r"u\.data: its lines are not user id, item id, rating, timestamp separated by tabs$"),
        (_ml_1m, "ratings.dat", "1::1193::5::978300760\n2::x::3::978824291\n",
         r"ratings\.dat, line 2, column 'MovieID': movie ids must be integers, got 'x'"),
        (_ml_1m, "movies.dat", "1::Toy Story (1995)::Comedy\n2::Jumanji (1995)\n",
         r"movies\.dat, line 2: is not MovieID::Title::Genres$"),
        (_ml_1m, "movies.dat", "1::Toy Story (1995)::Comedy\n\nx2::Heat (1995)::Action\n",
         r"movies\.dat, line 3, column 'MovieID': movie ids must be integers, got 'x2'"),
    ],
    ids=["100k-value", "100k-short-lines", "1m-value", "1m-short-line", "1m-after-a-blank"],
)  # fmt: skip
def test_movielens_refusals_name_the_line_and_the_readme_column(
    tmp_path: Path, layout: Callable[[Path], Path], file: str, text: str, error: str
) -> None:
    directory = layout(tmp_path / "ml")
    (directory / file).write_text(text)
    with pytest.raises(FileError, match=error):
        read_movielens(directory)


@pytest.mark.parametrize("text", ["", "\n\n"], ids=["no-bytes", "blank-lines"])
def test_an_empty_file_says_it_is_empty(tmp_path: Path, text: str) -> None:
    with pytest.raises(FileError, match=r"r\.csv: the file is empty$"):
        _ratings_csv(tmp_path / "r.csv", text)
    directory = _latest(tmp_path / "ml")
    (directory / "ratings.csv").write_text(text)
    with pytest.raises(FileError, match=r"ratings\.csv: the file is empty$"):
        read_movielens(directory)
    directory = _ml_100k(tmp_path / "ml-100k")
    (directory / "u.data").write_text(text)
    with pytest.raises(FileError, match=r"u\.data: the file is empty$"):
        read_movielens(directory)


def test_a_ratings_file_with_a_header_only_has_no_ratings(tmp_path: Path) -> None:
    with pytest.raises(FileError, match=r"r\.csv: no ratings: the file has its header line only"):
        _ratings_csv(tmp_path / "r.csv", "user,movie,rating\n")


def test_a_file_without_a_header_is_told_how_to_read_it_by_position(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    with pytest.raises(FileError) as refused:
        _ratings_csv(path, "1,2,3.5,100\n")
    error = refused.value
    assert error.positions == {"watcher_col": 0, "movie_col": 1, "rating_col": 2}
    assert str(error) == (
        f"{path}: no column 'user'; its first line, '1,2,3.5,100', looks like data, not a "
        "header; if it has no header, give its columns by 0-based position: watcher_col=0, "
        "movie_col=1, rating_col=2"
    )
    assert error.describe(lambda name, i: f"--{name} {i}", " ").endswith(
        "position: --watcher_col 0 --movie_col 1 --rating_col 2"
    )


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user,movie,rating\n1,2,3\n")
    with pytest.raises(FileError, match=r"r\.csv: no column 'stars'; its header has \['user',"):
        read_table(tmp_path / "r.csv", watcher_col="user", movie_col="movie", rating_col="stars")
    pq.write_table(pa.table({"user": [1], "movie": [2]}), tmp_path / "r.parquet")
    with pytest.raises(FileError, match=r"no column 'rating'"):
        read_table(
            tmp_path / "r.parquet", watcher_col="user", movie_col="movie", rating_col="rating"
        )


def test_a_missing_position_is_named(tmp_path: Path) -> None:
    (tmp_path / "r.tsv").write_text("1\t2\t3\n")
    with pytest.raises(FileError, match=r"no column 3; its first line has 3 fields \(0\.\.2\)"):
        read_table(tmp_path / "r.tsv", watcher_col=0, movie_col=1, rating_col=3)


def test_names_and_positions_do_not_mix(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user,movie,rating\n1,2,3\n")
    with pytest.raises(ValueError, match="not both"):
        read_table(tmp_path / "r.csv", watcher_col="user", movie_col=1, rating_col="rating")


def test_education_levels_are_whole_numbers(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("user,school\n1,2\n2,\n3,2.5\n")
    with pytest.raises(FileError, match=r"w\.csv, line 4, column 'school': education levels"):
        _ratings_csv(
            tmp_path / "r.csv",
            "user,movie,rating\n1,2,3\n",
            watchers=tmp_path / "w.csv",
            education_col="school",
        )


def test_the_server_s_stream_positions_become_file_lines(tmp_path: Path) -> None:
    """An import streams ratings, then watchers grouped by which features they have, then
    movies, `chunk_rows` a message: each position a refusal names maps back to its line."""
    (tmp_path / "w.csv").write_text("user,age,school\n1,30,\n2,,1\n3,40,2\n4,,\n5,50,\n")
    (tmp_path / "m.csv").write_text("movie,title\n7,Seven\n8,Eight\n9,Nine\n")
    data = _ratings_csv(
        tmp_path / "r.csv",
        "user,movie,rating\n1,7,3\n2,8,4\n\n3,9,5\n",
        watchers=tmp_path / "w.csv",
        age_col="age",
        education_col="school",
        movies=tmp_path / "m.csv",
        title_col="title",
    )
    # chunk_rows=2: 0 the header, 1-2 ratings (rows 0-1, 2), 3 watchers with both features (row
    # 2), 4 with age only (rows 0, 4), 5 with education only (1), 6 with neither (3), 7-8 movies.
    told = functools.partial(data.in_file_terms, chunk_rows=2)
    r, w, m = (tmp_path / n for n in ("r.csv", "w.csv", "m.csv"))
    assert told("chunks[2].ratings.movie_ids[0]: must be >= 0") == (
        f"{r}, line 5, column 'movie': must be >= 0"  # the blank line 4 is counted
    )
    assert told("chunks[4].watchers.age_years[1]: x") == f"{w}, line 6, column 'age': x"
    assert told("chunks[5].watchers.education[0]: x") == f"{w}, line 3, column 'school': x"
    assert told("chunks[6].watchers.watcher_ids[0]: x") == f"{w}, line 5, column 'user': x"
    assert told("chunks[8].movies.titles[0]: 'A' here but 'B' at chunks[7].movies.titles[1]") == (
        f"{m}, line 4, column 'title': 'A' here but 'B' at {m}, line 3, column 'title'"
    )
    # Positions that name no row of these columns stay as they are.
    for text in (
        "chunks[0].header.name: bad",
        "chunks[2].movies.titles[0]",
        "chunks[2].ratings.movie_ids[5]",
    ):
        assert told(text) == text


def test_without_pyarrow_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "r.csv").write_text("u,m,r\n1,2,3\n")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'movie-embeddings\[data\]'"):
        read_table(tmp_path / "r.csv", watcher_col="u", movie_col="m", rating_col="r")
