"""The dataset RPCs through a real in-process server and the generated stubs: import by a
client stream, every refusal with its chunk, row and column (and, for rows read from files,
their lines), broken streams, limits, token."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import movie_embeddings as me
from movie_embeddings.datasets import read_table
from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc
from movie_embeddings_server.serving.app import Running, ServerConfig, create_server
from movie_embeddings_server.store.versions import DATASETS_DIR

TOKEN = "s3cret"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
MAX_RATINGS = 1000
MAX_MESSAGE = 64 * 1024
NAN = float("nan")


@dataclass
class Server:
    running: Running
    stub: pb_grpc.MovieEmbeddingServiceStub
    data_dir: Path


def _start(data_dir: Path) -> Running:
    server, running = create_server(
        ServerConfig(
            data_dir,
            port=0,
            auth_token=TOKEN,
            max_dataset_ratings=MAX_RATINGS,
            max_message_bytes=MAX_MESSAGE,
        )
    )
    server.start()
    return running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("datasets")
    running = _start(data_dir)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield Server(running, pb_grpc.MovieEmbeddingServiceStub(channel), data_dir)
    running.stop(None)


def _header(name: str, description: str = "") -> pb.ImportDatasetRequest:
    return pb.ImportDatasetRequest(header=pb.DatasetHeader(name=name, description=description))


def _ratings(
    watchers: list[int], movies: list[int], ratings: list[float], timestamps: Sequence[int] = ()
) -> pb.ImportDatasetRequest:
    chunk = pb.RatingChunk(
        watcher_ids=watchers, movie_ids=movies, ratings=ratings, timestamps=timestamps
    )
    return pb.ImportDatasetRequest(ratings=chunk)


def _watchers(
    ids: list[int], ages: Sequence[float] = (), education: Sequence[int] = ()
) -> pb.ImportDatasetRequest:
    chunk = pb.WatcherChunk(watcher_ids=ids, age_years=ages, education=education)
    return pb.ImportDatasetRequest(watchers=chunk)


def _movies(
    ids: list[int], titles: Sequence[str] = (), genres: Sequence[str] = ()
) -> pb.ImportDatasetRequest:
    return pb.ImportDatasetRequest(
        movies=pb.MovieChunk(movie_ids=ids, titles=titles, genres=genres)
    )


def _import(server: Server, *requests: pb.ImportDatasetRequest) -> pb.DatasetInfo:
    return server.stub.ImportDataset(iter(requests), metadata=AUTH, timeout=30).dataset


def _version_dirs(server: Server, name: str) -> list[str]:
    """Versions and staging directories of a dataset (not the lock, nor the empty marker a
    deleted version leaves so that its number is never used again)."""
    parent = server.data_dir / DATASETS_DIR / name
    if not parent.exists():
        return []
    return sorted(
        p.name for p in parent.iterdir() if p.name != ".lock" and not p.name.startswith(".deleted")
    )


def test_import_through_a_stream_then_get_list_and_delete(server: Server) -> None:
    info = _import(
        server,
        _header("films", "from a test"),
        _movies([3, 1], ["Misérables, Les (1995)", 'Say "Hi", Bob'], ["Drama|War", "Comedy"]),
        _ratings([10, 10, 20], [1, 2, 1], [4.0, 3.5, 5.0], [100, 200, 300]),
        _ratings([20, 10], [1, 1], [2.0, 1.0], [400, 500]),  # (10, 1) again: the last is kept
        _watchers([10, 99], [34.5, 60], [2, 1]),  # 99 rated nothing
    )
    assert (info.ref.name, info.ref.version) == ("films", 1)
    assert (info.num_ratings, info.num_watchers, info.num_movies) == (3, 2, 3)
    assert (info.num_duplicate_ratings, info.num_dropped_watchers) == (2, 1)
    assert (info.min_rating, info.max_rating, info.num_titled_movies) == (1.0, 3.5, 2)
    assert info.has_age and info.has_education and info.description == "from a test"
    assert info.size_bytes > 0 and info.create_time.seconds > 0

    got = server.stub.GetDataset(pb.GetDatasetRequest(dataset=pb.DatasetRef(name="films")))
    assert got.dataset == info
    listed = server.stub.ListDatasets(pb.ListDatasetsRequest(name="films")).datasets
    assert list(listed) == [info]

    stored = server.running.datasets.load("films", 1)
    assert stored.movie_ids.tolist() == [1, 2, 3]
    assert stored.titles.tolist() == ['Say "Hi", Bob', "", "Misérables, Les (1995)"]
    assert stored.ratings.watcher_ids.tolist() == [10, 20]
    assert stored.ratings.values.tolist() == [1.0, 3.5, 2.0]
    np.testing.assert_array_equal(stored.age_years, [34.5, np.nan])

    second = _import(server, _header("films"), _ratings([1], [1], [3.0]))
    assert second.ref.version == 2
    deleted = server.stub.DeleteDataset(
        pb.DeleteDatasetRequest(dataset=pb.DatasetRef(name="films")), metadata=AUTH
    )
    assert [d.ref.version for d in deleted.datasets] == [1, 2]
    assert list(deleted.datasets) == [info, second]
    assert not server.stub.ListDatasets(pb.ListDatasetsRequest(name="films")).datasets


def test_unknown_datasets_are_not_found(server: Server) -> None:
    ref = pb.DatasetRef(name="nothing-here", version=3)
    with pytest.raises(grpc.RpcError) as exc:
        server.stub.GetDataset(pb.GetDatasetRequest(dataset=ref))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as exc:
        server.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=ref), metadata=AUTH)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


OK = _ratings([1, 2], [1, 2], [3.0, 4.0])


@pytest.mark.parametrize(
    ("requests", "field"),
    [
        ([OK], "chunks[0]"),  # no header first
        ([], "chunks"),  # no header at all
        ([_header("bad name"), OK], "chunks[0].header.name"),
        ([_header("ok"), OK, _header("ok")], "chunks[2].header"),
        ([_header("ok"), pb.ImportDatasetRequest()], "chunks[1]"),
        (
            [_header("ok"), OK, _ratings([1, -2], [1, 1], [3, 3])],
            "chunks[2].ratings.watcher_ids[1]",
        ),
        (
            [_header("ok"), _ratings([1, 2, 3], [1, 1, -7], [3, 3, 3])],
            "chunks[1].ratings.movie_ids[2]",
        ),
        ([_header("ok"), _ratings([1, 2], [1, 1], [3, NAN])], "chunks[1].ratings.ratings[1]"),
        ([_header("ok"), _ratings([1, 2], [1, 1], [3])], "chunks[1].ratings.ratings[1]"),
        ([_header("ok"), _ratings([1, 2], [1, 1], [3, 3], [9])], "chunks[1].ratings.timestamps[1]"),
        ([_header("ok"), OK, _watchers([1, 2], [40, 200])], "chunks[2].watchers.age_years[1]"),
        ([_header("ok"), OK, _watchers([1], [NAN])], "chunks[2].watchers.age_years[0]"),
        ([_header("ok"), OK, _watchers([1, 2], [], [1, -1])], "chunks[2].watchers.education[1]"),
        (
            [_header("ok"), OK, _watchers([1]), _watchers([2, 1])],
            "chunks[3].watchers.watcher_ids[1]",
        ),
        (
            [_header("ok"), _movies([5], ["Five"]), OK, _movies([6, 5], ["Six", "Cinq"])],
            "chunks[3].movies.titles[1]",
        ),
        ([_header("ok"), _movies([5], ["Five"])], "chunks"),  # no ratings
    ],
)
def test_every_refusal_names_the_chunk_row_and_column(server: Server, requests, field) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        server.stub.ImportDataset(iter(requests), metadata=AUTH, timeout=30)
    error = exc.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}: ")
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    (violation,) = bad_request.field_violations
    assert violation.field == field
    assert violation.description and violation.description in error.details()
    assert not _version_dirs(server, "ok")


RATINGS_CSV = "user,movie,rating\n1,7,3\n2,8,4\n\n3,9,5\n"
WATCHERS_CSV = "user,age,school\n1,30,\n2,,1\n3,40,2\n4,,\n5,50,\n"
MOVIES_CSV = "movie,title\n7,Seven\n8,Eight\n9,Nine\n"


@pytest.mark.parametrize(
    ("file", "text", "told"),
    [
        ("r.csv", RATINGS_CSV.replace("3,9,5", "3,-9,5"), "r.csv, line 5, column 'movie': must"),
        ("w.csv", WATCHERS_CSV.replace("5,50", "5,200"), "w.csv, line 6, column 'age': must be"),
        (
            "w.csv",
            WATCHERS_CSV.replace("4,,", "2,,"),
            "w.csv, line 5, column 'user': watcher 2 is described already, at {dir}/w.csv, "
            "line 3, column 'user'",
        ),
        (
            "m.csv",
            MOVIES_CSV + "7,Sept\n",
            "m.csv, line 5, column 'title': movie 7 is listed with 'Sept' here but with "
            "'Seven' at {dir}/m.csv, line 2, column 'title'",
        ),
    ],
    ids=["ratings", "watchers-in-a-feature-group", "watchers-twice", "movies-twice"],
)
def test_a_refusal_of_rows_read_from_files_is_told_in_their_lines(
    server: Server, tmp_path: Path, file: str, text: str, told: str
) -> None:
    """The server names positions in the stream; the columns read from files tell them as
    the lines they came from, whichever chunk (of 2 rows here) each row travelled in."""
    for name, default in (("r.csv", RATINGS_CSV), ("w.csv", WATCHERS_CSV), ("m.csv", MOVIES_CSV)):
        (tmp_path / name).write_text(text if name == file else default)
    columns = {"watcher_col": "user", "movie_col": "movie", "rating_col": "rating"}
    features = {"age_col": "age", "education_col": "school", "title_col": "title"}
    files = {"watchers": tmp_path / "w.csv", "movies": tmp_path / "m.csv"}
    data = read_table(tmp_path / "r.csv", **columns, **features, **files)
    client = me.Client(f"127.0.0.1:{server.running.port}", token=TOKEN)
    with client, pytest.raises(me.InvalidArgument) as refused:
        client.import_dataset("from-files", data, chunk_rows=2)
    assert refused.value.details.startswith("chunks[")  # the server's own terms
    assert data.in_file_terms(refused.value.details, 2).startswith(
        f"{tmp_path}/" + told.format(dir=tmp_path)
    )
    assert not _version_dirs(server, "from-files")


def test_a_stream_broken_off_mid_way_stores_nothing(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="movie_embeddings_server.serving.rpc")

    def requests() -> Iterator[pb.ImportDatasetRequest]:
        yield _header("broken")
        yield _ratings([1, 2], [1, 2], [3.0, 4.0])
        # Mid-way for the server too: its handler has started and read the chunks (a call
        # cancelled before its handler runs never reaches the servicer at all).
        time.sleep(1.0)
        raise RuntimeError("the client gave up")

    with pytest.raises(grpc.RpcError):
        server.stub.ImportDataset(requests(), metadata=AUTH, timeout=30)
    deadline = time.monotonic() + 10
    while "ImportDataset CANCELLED" not in caplog.text:  # the server's side of the call ended
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.01)
    assert _version_dirs(server, "broken") == []  # no version, no staging directory
    listed = server.stub.ListDatasets(pb.ListDatasetsRequest()).datasets
    assert all(d.ref.name != "broken" for d in listed)


def test_more_ratings_than_the_server_allows_are_resource_exhausted(server: Server) -> None:
    chunk = _ratings(list(range(600)), [1] * 600, [3.0] * 600)
    with pytest.raises(grpc.RpcError) as exc:
        _import(server, _header("too-many"), chunk, chunk)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "chunks[2].ratings" in exc.value.details()
    assert f"{MAX_RATINGS:,}" in exc.value.details()
    assert _version_dirs(server, "too-many") == []


def test_a_message_over_the_size_limit_is_resource_exhausted(server: Server) -> None:
    titles = ["x" * 1000] * (MAX_MESSAGE // 1000 + 1)
    big = _movies(list(range(len(titles))), titles)
    with pytest.raises(grpc.RpcError) as exc:
        _import(server, _header("huge"), OK, big)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _version_dirs(server, "huge") == []


def test_import_and_delete_need_the_token_list_and_get_do_not(server: Server) -> None:
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        with pytest.raises(grpc.RpcError) as exc:
            server.stub.ImportDataset(iter([_header("guarded"), OK]), metadata=metadata)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _version_dirs(server, "guarded") == []
    info = _import(server, _header("guarded"), OK)
    request = pb.DeleteDatasetRequest(dataset=info.ref)
    with pytest.raises(grpc.RpcError) as exc:
        server.stub.DeleteDataset(request)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.stub.GetDataset(pb.GetDatasetRequest(dataset=info.ref)).dataset == info
    assert info in server.stub.ListDatasets(pb.ListDatasetsRequest()).datasets
    assert list(server.stub.DeleteDataset(request, metadata=AUTH).datasets) == [info]


def test_a_replica_and_a_restarted_server_see_an_imported_dataset(server: Server) -> None:
    replica = _start(server.data_dir)
    try:
        replica.poll(0.05)
        info = _import(server, _header("shared"), OK)
        with grpc.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
            stub = pb_grpc.MovieEmbeddingServiceStub(channel)
            request = pb.ListDatasetsRequest(name="shared")
            deadline = time.monotonic() + 10
            while list(stub.ListDatasets(request).datasets) != [info]:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=info.ref), metadata=AUTH)
    finally:
        replica.stop(None)
    server.running.datasets.load_new()  # what the poll does
    assert not server.stub.ListDatasets(pb.ListDatasetsRequest(name="shared")).datasets
    kept = _import(server, _header("shared"), OK)
    assert kept.ref.version == 2  # version 1 was deleted: its number is not reused
    restarted = _start(server.data_dir)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
            stub = pb_grpc.MovieEmbeddingServiceStub(channel)
            assert list(stub.ListDatasets(pb.ListDatasetsRequest(name="shared")).datasets) == [kept]
    finally:
        restarted.stop(None)
