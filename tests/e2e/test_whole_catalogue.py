"""A whole catalogue whose vectors pass gRPC's 4 MiB message limit, read through the SDK, the
CLI and grpcurl from a real server: StreamMovieVectors' pages, the client's message limit, the
target from the environment."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import CLI, ServerProcess, grpcurl_path

import movie_embeddings as me
from movie_embeddings.v1 import movie_embeddings_pb2 as pb

BIG = "big-catalogue"
MOVIES, DIM = 5_600, 200  # 5,600 x 200 float32 = 4.48 MB of floats alone, past 4 MiB
TIMEOUT = 120.0
SERVICE = "movie_embeddings.v1.MovieEmbeddingService"


@pytest.fixture(scope="module")
def big(server: ServerProcess) -> me.ModelInfo:
    """A synthetic model whose catalogue's vectors pass 4 MiB, trained on the shared server."""
    with me.Client(server.target) as client:
        events = list(
            client.train(
                BIG,
                num_watchers=60,
                num_movies=MOVIES,
                embedding_dim=DIM,
                hidden_units=8,
                epochs=1,
                seed=5,
                timeout=TIMEOUT,
            )
        )
    info = events[-1]
    assert isinstance(info, me.ModelInfo)
    return info


def cli(server: ServerProcess, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_one_batch_answer_of_the_whole_catalogue_is_past_the_limit(
    server: ServerProcess, big: me.ModelInfo
) -> None:
    """Why the stream exists: the unary read of every vector is refused by gRPC's cap."""
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/BatchGetMovieVectors",
            request_serializer=pb.BatchGetMovieVectorsRequest.SerializeToString,
            response_deserializer=pb.BatchGetMovieVectorsResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(pb.BatchGetMovieVectorsRequest(model=pb.ModelRef(name=BIG)), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_sdk_reads_the_whole_catalogue_in_pages(
    server: ServerProcess, big: me.ModelInfo
) -> None:
    with me.Client(server.target) as client:
        ids, matrix = client.movie_vectors(model=BIG)
        table = client.movie_table(model=BIG)
        pages = list(client.iter_movie_vectors(model=BIG))
        few = client.iter_movie_vectors([3, 0, 3, MOVIES - 1], model=BIG, page_size=3)
        some = list(few)
        one = client.movie_vector(MOVIES - 1, model=BIG)
    assert matrix.shape == (MOVIES, DIM) and matrix.dtype == np.float32
    np.testing.assert_array_equal(ids, np.arange(MOVIES))
    np.testing.assert_array_equal(table.vectors, matrix)
    np.testing.assert_array_equal(table.movie_ids, ids)
    assert len(table) == MOVIES and len(table.titles) == len(table.genres) == MOVIES
    assert table.model == me.ModelRef(BIG, big.ref.version)
    # Pages of ~1 MiB: several, each under the limit by a wide margin.
    assert len(pages) >= 5
    assert sum(len(p) for p in pages) == MOVIES
    assert max(p.vectors.nbytes for p in pages) <= 2**20
    # Ids as asked, repeats kept, in pages of the size asked.
    assert [list(p.movie_ids) for p in some] == [[3, 0, 3], [MOVIES - 1]]
    np.testing.assert_array_equal(some[1].vectors[0], one)
    np.testing.assert_array_equal(some[0].vectors[1], matrix[0])


def test_the_clients_message_limit_is_settable(server: ServerProcess, big: me.ModelInfo) -> None:
    with me.Client(server.target, max_message_bytes=64 * 2**10) as small:
        with pytest.raises(me.ResourceExhausted):
            small.movie_vectors(model=BIG)  # a 1 MiB page past a 64 KiB cap
        assert small.movie_vector(0, model=BIG).shape == (DIM,)


def test_a_bad_page_size_is_invalid_argument(server: ServerProcess, big: me.ModelInfo) -> None:
    with me.Client(server.target) as client, pytest.raises(me.InvalidArgument) as caught:
        list(client.iter_movie_vectors(model=BIG, page_size=-1))
    assert "page_size" in str(caught.value) and "100000" in str(caught.value)


def test_the_cli_reads_the_whole_catalogue(
    server: ServerProcess, big: me.ModelInfo, tmp_path: Path
) -> None:
    # --target from the environment.
    env = {"MOVIE_EMBEDDINGS_TARGET": server.target}
    result = cli(server, "vector", "--all", "--json", "--model", BIG, env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["movie_id"] for row in rows] == list(range(MOVIES))
    assert {len(row["vector"]) for row in rows} == {DIM}

    # A dense ratings row of the whole catalogue answers as its liked ids do.
    liked = [5, 17, MOVIES - 2]
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join("1" if m in liked else "0" for m in range(MOVIES)) + "\n")
    common = ("--model", BIG, "--json", "--top-k", "3", "--age", "30", "--education", "1")
    common = (*common, "--target", server.target)
    dense = cli(server, "reconstruct", "--ratings-file", str(path), *common)
    assert dense.returncode == 0, dense.stderr
    by_ids = cli(server, "reconstruct", "--liked", ",".join(map(str, liked)), *common)
    assert json.loads(dense.stdout) == json.loads(by_ids.stdout)

    out = tmp_path / "big.png"
    plot = cli(server, "plot", "--model", BIG, "--output", str(out), "--target", server.target)
    assert plot.returncode == 0, plot.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cli_message_limit_is_settable_and_its_refusal_one_line(
    server: ServerProcess, big: me.ModelInfo
) -> None:
    common = ("vector", "--all", "--model", BIG, "--target", server.target)
    refused = cli(server, *common, "--max-message-bytes", "64KiB")
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1 and "RESOURCE_EXHAUSTED" in refused.stderr
    assert "Traceback" not in refused.stderr
    typo = cli(server, *common, "--max-message-bytes", "64 parsecs")
    assert typo.returncode == 2 and "64MiB" in typo.stderr


def test_grpcurl_streams_the_whole_catalogue(server: ServerProcess, big: me.ModelInfo) -> None:
    result = subprocess.run(
        [
            grpcurl_path(),
            "-plaintext",
            "-d",
            json.dumps({"model": {"name": BIG}}),
            server.target,
            f"{SERVICE}/StreamMovieVectors",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    decoder, text, pos, pages = json.JSONDecoder(), result.stdout, 0, []
    while text[pos:].strip():
        page, pos = decoder.raw_decode(text, len(text) - len(text[pos:].lstrip()))
        pages.append(page)
    assert len(pages) >= 5
    assert {page["total_movies"] for page in pages} == {MOVIES}
    ids = [v.get("movie_id", 0) for page in pages for v in page["vectors"]]
    assert ids == list(range(MOVIES))
