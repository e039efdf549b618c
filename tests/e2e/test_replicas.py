"""Two real server processes on one store: calls spread over both, a version trained through
one is served by the other within the poll interval, and neither ever fails a call."""

from __future__ import annotations

import functools
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import ServerProcess, copy_store, start_server, wait_until

import movie_embeddings as me
from movie_embeddings import _calls
from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc

POLL_SECONDS = 1.0


@pytest.fixture(scope="module")
def replicas(server: ServerProcess, tmp_path_factory) -> Iterator[list[ServerProcess]]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("replicas")
    data = copy_store(server, root / "data")
    flags = ("--poll-seconds", str(POLL_SECONDS), "--access-log")
    started: list[ServerProcess] = []
    try:
        for name in ("replica-a", "replica-b"):
            started.append(start_server(data, root / f"{name}.log", "--server-id", name, *flags))
        yield started
    finally:
        codes = [proc.stop() for proc in started]
    assert codes == [0] * len(started)


def _both(replicas: list[ServerProcess]) -> str:
    return ",".join(proc.target for proc in replicas)


def test_calls_are_spread_over_both_replicas(replicas: list[ServerProcess]) -> None:
    # Through the SDK's own channel (several targets, round_robin): read each answer's
    # `server-id` trailing metadata.
    channel = _calls.open_channel(grpc, _both(replicas), False, None, None, None)
    with channel:
        stub = pb_grpc.MovieEmbeddingServiceStub(channel)

        def answered() -> str:
            _, call = stub.GetMovieVector.with_call(
                pb.GetMovieVectorRequest(movie_id=1), timeout=10
            )
            return dict(call.trailing_metadata())["server-id"]

        # The first calls may find one connection still being made (slow on a busy machine).
        first = [answered() for _ in range(20)]
        deadline = time.monotonic() + 30
        while set(first) != {"replica-a", "replica-b"} and time.monotonic() < deadline:
            first.append(answered())
        assert set(first) == {"replica-a", "replica-b"}
        # Round-robin once both connections are up.
        answered_by = [answered() for _ in range(20)]
    assert min(answered_by.count("replica-a"), answered_by.count("replica-b")) >= 5
    # The SDK client itself: each replica's access log shows its share of the calls.
    before = [_count(proc, "NearestMovies") for proc in replicas]
    with me.Client(_both(replicas)) as client:
        for _ in range(20):
            client.nearest_movies(1, k=3)
    after = [_count(proc, "NearestMovies") for proc in replicas]
    assert all(a - b >= 5 for a, b in zip(after, before, strict=True)), (before, after)
    assert sum(after) - sum(before) == 20


def _count(proc: ServerProcess, rpc: str) -> int:
    return len(re.findall(rf"{rpc} OK \d", proc.log_text()))


def test_a_version_trained_on_one_replica_is_served_by_the_other(
    replicas: list[ServerProcess],
) -> None:
    a, b = replicas
    stop, failures, calls = threading.Event(), [], [0]

    def query() -> None:  # callers through both replicas the whole time
        with me.Client(_both(replicas)) as client:
            for _ in range(100_000):
                if stop.is_set():
                    return
                try:
                    client.nearest_movies(2, k=5)
                    client.get_model()
                    calls[0] += 2
                except me.MovieEmbeddingsError as exc:
                    failures.append(exc)

    callers = [threading.Thread(target=query) for _ in range(3)]
    for t in callers:
        t.start()
    try:
        with me.Client(a.target) as on_a, me.Client(b.target) as on_b:
            info = list(on_a.train("shared", num_watchers=300, epochs=2, seed=3))[-1]
            trained = time.monotonic()
            wait_until(
                lambda: [m.ref for m in on_b.list_models("shared")] == [info.ref],
                10,
                "the version trained on a listed by b",
            )
            lag = time.monotonic() - trained
            assert on_b.get_model("shared") == info
            assert (
                on_b.movie_vectors(model="shared")[1] == on_a.movie_vectors(model="shared")[1]
            ).all()
    finally:
        stop.set()
        for t in callers:
            t.join(60)
    assert failures == []
    assert lag <= POLL_SECONDS + 2.0, lag  # one poll, plus room for a loaded CI machine
    assert "loaded 1 new version(s) written by another process" in b.log_text()
    print(f"\nreload lag {lag:.2f} s (poll every {POLL_SECONDS:g} s); {calls[0]} calls, 0 failed")


def test_two_replicas_training_one_name_at_once_get_distinct_versions(
    replicas: list[ServerProcess],
) -> None:
    results: dict[str, me.ModelInfo] = {}

    def train(proc: ServerProcess) -> None:
        with me.Client(proc.target) as client:
            results[proc.target] = list(client.train("race", num_watchers=200, epochs=3, seed=1))[
                -1
            ]

    threads = [threading.Thread(target=train, args=(proc,)) for proc in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(info.version for info in results.values()) == [1, 2]
    store = replicas[0].data_dir / "race"
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == ["1", "2"]

    def lists_both(proc: ServerProcess) -> bool:
        with me.Client(proc.target) as client:
            return [m.version for m in client.list_models("race")] == [1, 2]

    for proc in replicas:  # each replica loads the other's version at its next poll
        wait_until(functools.partial(lists_both, proc), 10, f"{proc.target} lists both versions")
        with me.Client(proc.target) as client:
            for version in (1, 2):
                assert client.movie_vectors(model=me.ModelRef("race", version))[1].shape == (80, 5)


def test_a_damaged_version_from_another_process_is_retried_not_fatal(
    replicas: list[ServerProcess],
) -> None:
    a, _ = replicas
    broken = a.data_dir / "default" / "90"
    broken.mkdir()  # a version directory with nothing in it (not written by our store)
    try:
        wait_until(
            lambda: "/default/90 (attempt 2" in a.log_text(),
            POLL_SECONDS * 3 + 10,
            "a second attempt at the damaged version",
        )
        log = a.log_text()
        assert re.search(
            r"skipping damaged model version .*/default/90 \(attempt 1, next in 1 s\)", log
        )
        assert re.search(r"/default/90 \(attempt 2, next in 2 s\)", log)
        with me.Client(a.target) as client:
            assert 90 not in [m.version for m in client.list_models("default")]
            assert client.movie_vector(0).shape == (5,)
    finally:
        shutil.rmtree(broken)


def test_replicas_starting_on_one_empty_store_train_the_default_model_once(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    flags = ("--poll-seconds", str(POLL_SECONDS))
    starting = [
        threading.Thread(
            target=lambda name=name: started.append(
                start_server(data, tmp_path / f"{name}.log", "--server-id", name, *flags)
            )
        )
        for name in ("first", "second")
    ]
    started: list[ServerProcess] = []
    for t in starting:
        t.start()
    for t in starting:
        t.join(180)
    try:
        assert len(started) == 2  # both became SERVING
        for proc in started:
            with me.Client(proc.target) as client:
                assert [(m.name, m.version) for m in client.list_models()] == [("default", 1)]
        logs = [proc.log_text() for proc in started]
        assert sum("empty model store: training the default model" in log for log in logs) == 1
        assert sum("another process is training the default model" in log for log in logs) == 1
    finally:
        codes = [proc.stop() for proc in started]
    assert codes == [0] * len(started)


def test_delete_and_labels_reach_both_replicas_with_no_failed_call(
    replicas: list[ServerProcess],
) -> None:
    a, b = replicas
    stable = me.ModelRef("rollback", label="stable")
    with me.Client(a.target) as on_a, me.Client(b.target) as on_b:
        for seed in (1, 2, 3):
            list(on_a.train("rollback", num_watchers=100, epochs=1, seed=seed))

        def agree(what: str, read, expected) -> None:  # type: ignore[no-untyped-def]
            def same() -> bool:
                try:
                    return bool(read(on_a) == read(on_b) == expected)
                except me.NotFound:  # the label, say, not read by one of them yet
                    return False

            wait_until(same, POLL_SECONDS * 2 + 10, f"both replicas: {what}")

        versions = lambda c: [m.version for m in c.list_models("rollback")]  # noqa: E731
        agree("versions 1-3", versions, [1, 2, 3])
        on_a.set_model_label("rollback", "stable", 2)
        agree("stable is v2", lambda c: c.get_model(stable).version, 2)
        assert on_b.get_model(stable).version == 2

        stop, failures, answered, calls = threading.Event(), [], set(), [0]

        def query() -> None:  # by the label and by "newest", through both replicas
            with me.Client(_both(replicas)) as client:
                while not stop.is_set():
                    try:
                        answered.add(("stable", client.get_model(stable).version))
                        client.nearest_movies(2, k=3, model=stable)
                        answered.add(("newest", client.get_model("rollback").version))
                        calls[0] += 3
                    except me.MovieEmbeddingsError as exc:
                        failures.append(exc)

        callers = [threading.Thread(target=query) for _ in range(3)]
        for t in callers:
            t.start()
        try:
            assert on_b.set_model_label("rollback", "stable", 1) == {"stable": 1}  # roll back
            agree("stable is v1", lambda c: c.get_model(stable).version, 1)
            assert [m.version for m in on_a.delete_model("rollback", 3)] == [3]
            agree("v3 deleted", versions, [1, 2])
            with pytest.raises(me.FailedPrecondition, match="version 1 is labelled stable"):
                on_b.delete_model("rollback", 1)
            with pytest.raises(me.FailedPrecondition):
                on_b.delete_model("rollback")  # every version: v1 is labelled, none goes
        finally:
            stop.set()
            for t in callers:
                t.join(60)
        for client in (on_a, on_b):
            listed = client.list_models("rollback")
            assert [(m.version, m.labels) for m in listed] == [(1, ("stable",)), (2, ())]
            assert client.get_model(stable).version == 1
    assert failures == []
    assert {("stable", 1), ("stable", 2), ("newest", 2)} <= answered
    assert sorted(p.name for p in (a.data_dir / "rollback").iterdir() if p.name.isdigit()) == [
        "1",
        "2",
    ]
    assert "stopped serving rollback v3: deleted from the store" in b.log_text()
    print(f"\nlabel moved and a version deleted under {calls[0]} calls, 0 failed")
