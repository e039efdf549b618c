"""A real server stays correct while models swap, while callers cancel, misbehave or send too
much, and through shutdown; every call leaves one log line."""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ServerProcess, child_pids, copy_store, start_server, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc

import movie_embeddings as me
from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc

SERVICE = "/movie_embeddings.v1.MovieEmbeddingService"


def _copy(server: ServerProcess, tmp_path: Path, *flags: str) -> ServerProcess:
    """A server of its own on a copy of the session server's store (no default to train)."""
    return start_server(copy_store(server, tmp_path / "data"), tmp_path / "server.log", *flags)


@pytest.fixture
def own(server: ServerProcess, tmp_path: Path):  # type: ignore[no-untyped-def]
    proc = _copy(server, tmp_path, "--max-message-bytes", "200000")
    yield proc
    assert proc.stop() == 0


def _loop(target: str, stop: threading.Event, seen: list, failures: list) -> None:
    """NearestMovies and Reconstruct until `stop`, recording which version answered what."""
    nearest = pb.NearestMoviesRequest(movie_id=3, k=6)
    reconstruct = pb.ReconstructRequest(
        watchers=[pb.Watcher(liked_movie_ids=[1, 11, 21], age_years=33, education=2)], top_k=4
    )
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.MovieEmbeddingServiceStub(channel)
        for _ in range(100_000):  # bounded; ends on `stop` long before
            if stop.is_set():
                return
            try:
                n = stub.NearestMovies(nearest, timeout=10)
                seen.append(
                    ("n", n.model.version, tuple((x.movie_id, x.score) for x in n.neighbors))
                )
                r = stub.Reconstruct(reconstruct, timeout=10)
                seen.append(("r", r.model.version, tuple(r.reconstructions[0].probabilities)))
            except grpc.RpcError as exc:
                failures.append(exc)


def test_a_new_version_swaps_in_under_load_with_no_failed_call(own: ServerProcess) -> None:
    with me.Client(own.target) as client:
        old = client.get_model().version  # the copied store may hold several versions
    new = old + 1
    stop, failures = threading.Event(), []
    seen_by: list[list] = [[] for _ in range(4)]
    callers = [
        threading.Thread(target=_loop, args=(own.target, stop, seen, failures)) for seen in seen_by
    ]
    for t in callers:
        t.start()
    try:
        with me.Client(own.target) as client:
            events = list(client.train("default", num_watchers=3000, epochs=6, seed=5))
        wait_until(
            lambda: all(seen and seen[-1][1] == new for seen in seen_by),
            30,
            "every caller answered by the new version",
        )
    finally:
        stop.set()
        for t in callers:
            t.join(60)
    assert failures == []
    assert events[-1].ref == me.ModelRef("default", new)
    seen = [answer for answers in seen_by for answer in answers]
    versions = [v for _, v, _ in seen]
    assert set(versions) == {old, new}
    for answers in seen_by:  # a caller that has seen the new version never sees the old again
        in_order = [v for _, v, _ in answers]
        assert in_order == sorted(in_order)
    # Every answer is exactly what its version gives alone: never a mix of two versions.
    with grpc.insecure_channel(own.target) as channel:
        stub = pb_grpc.MovieEmbeddingServiceStub(channel)
        expected = {}
        for version in (old, new):
            ref = pb.ModelRef(name="default", version=version)
            n = stub.NearestMovies(pb.NearestMoviesRequest(model=ref, movie_id=3, k=6))
            r = stub.Reconstruct(
                pb.ReconstructRequest(
                    model=ref,
                    watchers=[pb.Watcher(liked_movie_ids=[1, 11, 21], age_years=33, education=2)],
                    top_k=4,
                )
            )
            expected["n", version] = tuple((x.movie_id, x.score) for x in n.neighbors)
            expected["r", version] = tuple(r.reconstructions[0].probabilities)
    assert expected["n", old] != expected["n", new]
    # Concurrent calls share a pass over the layer (serving/batching.py): the same products
    # summed in another order, equal to a lone call's to float32 rounding, where two versions
    # differ by far more.
    assert not np.allclose(expected["r", old], expected["r", new], rtol=1e-3)
    for kind, version, answer in seen:
        np.testing.assert_allclose(answer, expected[kind, version], rtol=1e-5, atol=1e-7)
    print(f"\n{len(seen)} calls during the swap, 0 failed; versions {sorted(set(versions))}")


def _train_log_ms(server: ServerProcess, offset: int) -> float:
    """How long the server says the last Train call took (its log line), polled briefly."""
    for _ in range(200):
        found = re.findall(r"Train (?:CANCELLED|DEADLINE_EXCEEDED) ([0-9.]+) ms", server.log_text())
        if len(found) > offset:
            return float(found[offset])
        time.sleep(0.05)
    raise AssertionError(f"no Train line in the log:\n{server.log_text()}")


def _staged(server: ServerProcess, name: str) -> list[Path]:
    return list((server.data_dir / name).iterdir()) if (server.data_dir / name).exists() else []


@pytest.mark.parametrize("deadline", [0.3, 3.0])  # before the job starts (TF loading), mid-fit
def test_a_train_past_its_deadline_stops_within_2_s_in_the_same_trainer(
    server: ServerProcess, tmp_path: Path, deadline: float
) -> None:
    own = _copy(server, tmp_path)  # its trainer process is still importing TensorFlow
    try:
        (trainer,) = child_pids(own.process.pid)
        with me.Client(own.target) as client:
            with pytest.raises(me.DeadlineExceeded):
                for _ in client.train(
                    "late", num_watchers=20_000, epochs=100, seed=1, timeout=deadline
                ):
                    pass
            assert _train_log_ms(own, 0) <= (deadline + 2) * 1000
            # The slot frees once the trainer process has stopped: a new Train is accepted.
            until = time.monotonic() + 60  # the trainer may still be importing TensorFlow
            while True:
                try:
                    info = list(client.train("next", num_watchers=100, epochs=1, seed=1))[-1]
                    break
                except me.ResourceExhausted:
                    assert time.monotonic() < until, "the stopped Train never freed its slot"
                    time.sleep(0.1)
            assert info.ref == me.ModelRef("next", 1)
            assert "late" not in {m.name for m in client.list_models()}
        assert child_pids(own.process.pid) == [trainer]  # stopped, not killed and replaced
        assert [p.name for p in _staged(own, "late") if not p.name.startswith(".lock")] == []
    finally:
        assert own.stop() == 0


def test_too_large_a_request_is_resource_exhausted_and_the_server_goes_on(
    own: ServerProcess,
) -> None:
    with me.Client(own.target) as client:
        with pytest.raises(me.ResourceExhausted):  # 1000 x 80 float32 > 200,000 bytes
            client.reconstruct_batch(
                np.zeros((1000, 80), np.float32),
                age_years=np.full(1000, 30),
                education=np.ones(1000),
            )
        small = np.zeros((100, 80), np.float32)
        batch = client.reconstruct_batch(small, age_years=np.full(100, 30), education=np.ones(100))
        assert len(batch) == 100


def test_garbage_bytes_get_a_clean_error_and_the_server_goes_on(own: ServerProcess) -> None:
    with grpc.insecure_channel(own.target) as channel:
        for method in ("GetMovieVector", "NearestMovies", "Reconstruct", "GetModel"):
            call = channel.unary_unary(f"{SERVICE}/{method}")  # raw bytes both ways
            with pytest.raises(grpc.RpcError) as info:
                call(b"\xff\xff\xff\xff\x0f garbage", timeout=10)
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "Traceback" not in info.value.details()
    with me.Client(own.target) as client:
        assert client.movie_vector(0).shape == (5,)


def _calls(target: str) -> None:
    with me.Client(target) as client:
        client.movie_vector(2)
        with pytest.raises(me.NotFound):
            client.movie_vector(999)
        client.list_models()


def test_a_failed_call_leaves_a_log_line_with_its_code_and_duration(own: ServerProcess) -> None:
    _calls(own.target)
    text = own.log_text()
    assert re.search(r"GetMovieVector NOT_FOUND \d+\.\d+ ms", text)
    assert not re.search(r" OK \d+\.\d+ ms", text)  # no access log unless asked for


def test_access_log_has_a_line_for_every_call(server: ServerProcess, tmp_path: Path) -> None:
    proc = _copy(server, tmp_path, "--access-log")
    try:
        _calls(proc.target)
        lines = re.findall(r"(\w+) (OK|NOT_FOUND) \d+\.\d+ ms", proc.log_text())
        assert lines == [
            ("GetMovieVector", "OK"),
            ("GetMovieVector", "NOT_FOUND"),
            ("ListModels", "OK"),
        ]
    finally:
        assert proc.stop() == 0


def test_sigterm_turns_health_not_serving_then_exits_0(
    server: ServerProcess, tmp_path: Path
) -> None:
    proc = _copy(server, tmp_path, "--grace-seconds", "3")
    try:
        with grpc.insecure_channel(proc.target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=60
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            proc.process.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert proc.process.wait(timeout=60) == 0
    finally:
        proc.stop()  # only if the checks above failed: it has exited otherwise
    with me.Client(proc.target, timeout=2) as client, pytest.raises(me.Unavailable):
        client.list_models()  # gone: new calls are refused


def test_a_damaged_version_is_skipped_with_a_warning_and_the_server_starts(
    server: ServerProcess, tmp_path: Path
) -> None:
    data = copy_store(server, tmp_path / "data")
    good = max(int(p.name) for p in (data / "default").iterdir() if p.name.isdigit())
    shutil.copytree(data / "default" / str(good), data / "default" / "77")
    (data / "default" / "77" / "weights.npz").write_bytes(b"PK\x03\x04 truncated")
    (data / "default" / "78").mkdir()  # empty
    proc = start_server(data, tmp_path / "server.log")
    try:
        with me.Client(proc.target) as client:
            assert [m.version for m in client.list_models()] == [good]
        log = proc.log_text()
        assert "skipping damaged model version" in log and "/default/77" in log
        assert "/default/78" in log
    finally:
        assert proc.stop() == 0


def test_a_trainer_process_killed_mid_train_fails_that_train_only(own: ServerProcess) -> None:
    with me.Client(own.target) as client:
        stream = client.train("doomed", num_watchers=20_000, epochs=100, seed=1)
        assert isinstance(next(stream), me.TrainProgress)
        (trainer,) = child_pids(own.process.pid)
        os.kill(trainer, signal.SIGKILL)
        with pytest.raises(me.ServerError, match="internal error"):
            list(stream)
        # A fresh trainer process takes the next Train; queries never noticed.
        assert client.movie_vector(1).shape == (5,)
        info = list(client.train("after", num_watchers=100, epochs=1, seed=1))[-1]
        assert info.ref == me.ModelRef("after", 1)
        assert "doomed" not in {m.name for m in client.list_models()}
    assert "the trainer process exited (code -9)" in own.log_text()
