"""Reconstruct and NearestMovies by vector through a real server that gathers concurrent
calls: top-k answers, gathered calls answered as lone ones, and each call's own end."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc
from movie_embeddings_server import config
from movie_embeddings_server.serving.app import Running, ServerConfig, create_server

WAIT_US = 300_000  # long, so that calls started together surely share a pass
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data: Path = tmp_path_factory.mktemp("gathering")
    server, running = create_server(
        ServerConfig(data, port=0, batch_wait_us=WAIT_US, max_batch_rows=32, metrics_port=0)
    )
    server.start()
    try:
        # g3 serves only the test of each call's own end: its first batch waits all of WAIT_US.
        for name, seed in (("g1", 1), ("g2", 2), ("g3", 3)):
            synthetic = config.resolve_synthetic({"num_watchers": 300, "seed": seed})
            running.trainer.train(name, synthetic, config.resolve_training({"epochs": 3}))
        yield running
    finally:
        running.stop(None)


@pytest.fixture(scope="module")
def stub(running: Running) -> Iterator[pb_grpc.MovieEmbeddingServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield pb_grpc.MovieEmbeddingServiceStub(channel)


def gathered(running: Running) -> dict[tuple[str, str], float]:
    """The passes ("count") and rows ("sum") the server's gathered passes have computed so
    far, by what they computed."""
    url = f"http://127.0.0.1:{running.metrics_http.server_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    prefix = "movie_embeddings_gathered_rows_"
    return {
        (sample.labels["pass"], sample.name.removeprefix(prefix)): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in (f"{prefix}count", f"{prefix}sum")
    }


def reconstruct(model: str, liked: list[int], top_k: int, only: bool) -> pb.ReconstructRequest:
    return pb.ReconstructRequest(
        model=pb.ModelRef(name=model),
        watchers=[pb.Watcher(liked_movie_ids=liked, age_years=30, education=2)],
        top_k=top_k,
        recommendations_only=only,
    )


RECONSTRUCTS = [
    reconstruct("g1", [1, 2, 3], 5, False),
    reconstruct("g1", [1, 2, 3], 5, True),
    reconstruct("g1", [40, 41], 12, True),
    reconstruct("g1", [], 3, False),
    reconstruct("g2", [7, 8, 9, 10], 5, True),
    reconstruct("g2", [70], 1, False),
]
NEAREST = [
    pb.NearestMoviesRequest(
        model=pb.ModelRef(name=model),
        vector=pb.Vector(values=values),
        k=k,
        metric=metric,
        exclude_movie_ids=exclude,
    )
    for model, values, k, metric, exclude in [
        ("g1", [0.3, -1.0, 0.5, 0.2, 0.9], 5, pb.METRIC_COSINE, []),
        ("g1", [1.0, 1.0, -0.5, 0.0, 0.1], 8, pb.METRIC_COSINE, [3, 4]),
        ("g1", [-0.2, 0.4, 0.0, 1.5, -0.7], 80, pb.METRIC_UNSPECIFIED, []),
        ("g1", [0.1, 0.2, 0.3, 0.4, 0.5], 4, pb.METRIC_DOT, []),
        ("g2", [0.3, -1.0, 0.5, 0.2, 0.9], 6, pb.METRIC_COSINE, [1]),
        ("g1", [0.3, -1.0, 0.5, 0.2, 0.9], 3, pb.METRIC_EUCLIDEAN, []),
    ]
]


def recommended(response: pb.ReconstructResponse) -> list[list[int]]:
    return [[r.movie_id for r in w.recommendations] for w in response.reconstructions]


def all_at_once(stub: pb_grpc.MovieEmbeddingServiceStub, method: str, requests: list) -> list:
    call = getattr(stub, method)
    futures = [call.future(request, timeout=TIMEOUT) for request in requests]
    return [future.result() for future in futures]


def test_a_top_k_answer_is_the_top_k_of_the_full_answer(
    stub: pb_grpc.MovieEmbeddingServiceStub,
) -> None:
    full = stub.Reconstruct(reconstruct("g1", [1, 2, 3], 80, False), timeout=TIMEOUT)
    only = stub.Reconstruct(reconstruct("g1", [1, 2, 3], 10, True), timeout=TIMEOUT)
    (watcher,) = only.reconstructions
    assert len(watcher.probabilities) == 0
    assert recommended(only)[0] == recommended(full)[0][:10]
    probabilities = np.array(full.reconstructions[0].probabilities, np.float32)
    # Best first, ties to the lower row: the order a stable sort of -probability gives.
    order = [m for m in np.argsort(-probabilities, kind="stable") if m not in (1, 2, 3)]
    assert recommended(only)[0] == order[:10]
    assert [r.probability for r in watcher.recommendations] == probabilities[order[:10]].tolist()
    assert only.ByteSize() < 2000


def test_recommendations_only_needs_a_top_k(stub: pb_grpc.MovieEmbeddingServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Reconstruct(reconstruct("g1", [1], 0, True), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "top_k" in caught.value.details()


def test_gathered_reconstructs_equal_lone_ones(stub: pb_grpc.MovieEmbeddingServiceStub) -> None:
    alone = [stub.Reconstruct(r, timeout=TIMEOUT) for r in RECONSTRUCTS]
    together = all_at_once(stub, "Reconstruct", RECONSTRUCTS)
    for lone, gathered in zip(alone, together, strict=True):
        assert gathered.model == lone.model
        assert recommended(gathered) == recommended(lone)
        for a, b in zip(gathered.reconstructions, lone.reconstructions, strict=True):
            np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(
                [r.probability for r in a.recommendations],
                [r.probability for r in b.recommendations],
                rtol=1e-5,
            )


def test_gathered_nearest_by_vector_equals_lone(
    stub: pb_grpc.MovieEmbeddingServiceStub, running: Running
) -> None:
    # Sent first on models no by-vector call has used, so that each's first batch waits for
    # company: g1's three cosine queries share one pass, g2's is alone, and the dot and
    # Euclidean ones (scored in float64, alone) go through none; the Reconstructs sent with
    # them go through their own.
    before = gathered(running)
    nearest = [stub.NearestMovies.future(r, timeout=TIMEOUT) for r in NEAREST]
    reconstructs = [stub.Reconstruct.future(r, timeout=TIMEOUT) for r in RECONSTRUCTS]
    together = [future.result() for future in nearest]
    for future in reconstructs:
        future.result()
    grown = {key: value - before.get(key, 0) for key, value in gathered(running).items()}
    assert grown[("nearest", "sum")] == 4 and grown[("nearest", "count")] == 2
    assert grown[("reconstruct", "sum")] == len(RECONSTRUCTS)
    alone = [stub.NearestMovies(r, timeout=TIMEOUT) for r in NEAREST]
    for lone, concurrent in zip(alone, together, strict=True):
        assert concurrent.model == lone.model
        assert [n.movie_id for n in concurrent.neighbors] == [n.movie_id for n in lone.neighbors]
        np.testing.assert_allclose(
            [n.score for n in concurrent.neighbors], [n.score for n in lone.neighbors], atol=1e-6
        )


def test_a_gathered_call_ends_with_its_own_code_and_the_others_are_answered(
    stub: pb_grpc.MovieEmbeddingServiceStub,
) -> None:
    # A model no other call has used: its first batch waits for company all of the 0.3 s
    # (later ones wait for as many rows as its callers brought).
    requests = [
        reconstruct("g3", *given)
        for given in [
            ([1, 2, 3], 5, False),
            ([1, 2, 3], 5, True),
            ([40, 41], 12, True),
            ([], 3, False),
        ]
    ]
    first = stub.Reconstruct.future(requests[0], timeout=TIMEOUT)
    expiring = stub.Reconstruct.future(requests[2], timeout=0.1)  # within the 0.3 s wait
    cancelled = stub.Reconstruct.future(requests[3], timeout=TIMEOUT)
    bad = stub.Reconstruct.future(reconstruct("g3", [1000], 5, False), timeout=TIMEOUT)
    last = stub.Reconstruct.future(requests[1], timeout=TIMEOUT)
    assert cancelled.cancel()
    with pytest.raises(grpc.RpcError) as expired:
        expiring.result()
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.FutureCancelledError):
        cancelled.result()
    with pytest.raises(grpc.RpcError) as refused:
        bad.result()
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    lone = stub.Reconstruct(requests[0], timeout=TIMEOUT)
    assert recommended(first.result()) == recommended(lone)
    assert recommended(last.result())[0] == recommended(lone)[0]
    # The server goes on gathering.
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda r: stub.Reconstruct(r, timeout=TIMEOUT), requests[:2]))
    assert recommended(answers[0]) == recommended(lone)
