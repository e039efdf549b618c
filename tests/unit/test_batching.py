"""The gatherer: concurrent calls on one key share one compute; each keeps its own rows, its
errors and its end; a call alone waits at most the configured wait."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from movie_embeddings_server.errors import Cancelled
from movie_embeddings_server.serving.batching import Gatherer, SplitProduct

WAIT = 0.5  # seconds: long enough that every thread below joins before a pass starts


class Passes:
    """A compute that records each pass's row count (and can be told to fail)."""

    def __init__(self, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.fail = fail

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.sizes.append(len(rows))
        if self.fail:
            raise ValueError("the pass failed")
        return rows * 10.0


class CallEnd:
    """gRPC's add_callback, by hand: `end()` runs what the gatherer registered."""

    def __init__(self, ended: bool = False) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.ended = ended

    def __call__(self, callback: Callable[[], None]) -> bool:
        if self.ended:
            return False
        self.callbacks.append(callback)
        return True

    def end(self) -> None:
        self.ended = True
        for callback in self.callbacks:
            callback()


def concurrently(gatherer: Gatherer, inputs: list[np.ndarray], compute: Passes) -> list:
    """Each input as its own call, started together, on the same key."""
    start = threading.Barrier(len(inputs))

    def call(rows: np.ndarray) -> np.ndarray:
        start.wait(timeout=10)
        return gatherer.run("key", rows, compute, CallEnd())

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(call, inputs))


def test_concurrent_calls_share_one_pass_and_each_gets_its_own_rows() -> None:
    gatherer, compute = Gatherer(WAIT, max_rows=32), Passes()
    inputs = [np.full((i + 1, 3), float(i)) for i in range(5)]  # 1 + 2 + ... + 5 = 15 rows
    results = concurrently(gatherer, inputs, compute)
    assert compute.sizes == [15]
    for rows, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result, rows * 10.0)


def test_each_call_is_finished_by_the_pass_with_its_own_rows_and_its_own_failure() -> None:
    gatherer, compute = Gatherer(WAIT, max_rows=32), Passes()
    start = threading.Barrier(3)
    finished_on: list[str] = []

    def finish(i: int) -> Callable[[np.ndarray], float]:
        def done(rows: np.ndarray) -> float:
            finished_on.append(threading.current_thread().name)
            if i == 1:
                raise ValueError("call 1's own failure")
            return float(rows.sum())

        return done

    def call(i: int) -> float:
        start.wait(timeout=10)
        return gatherer.run("key", np.full((1, 2), float(i)), compute, CallEnd(), finish(i))

    with ThreadPoolExecutor(3, "caller") as pool:
        futures = [pool.submit(call, i) for i in range(3)]
        with pytest.raises(ValueError, match="call 1's own failure"):
            futures[1].result(timeout=10)
        assert [futures[i].result(timeout=10) for i in (0, 2)] == [0.0, 40.0]
    assert compute.sizes == [3]
    # All three finished by the one thread that ran the pass, right after it.
    assert len(finished_on) == 3 and len(set(finished_on)) == 1


def test_a_full_batch_starts_at_once_and_the_next_call_leads_another() -> None:
    gatherer, compute = Gatherer(60.0, max_rows=4), Passes()
    started = time.monotonic()
    results = concurrently(gatherer, [np.ones((2, 1))] * 4, compute)
    # Two batches of 4 rows, each started when full, long before the 60 s wait.
    assert sorted(compute.sizes) == [4, 4]
    assert time.monotonic() - started < 30
    assert all(len(r) == 2 for r in results)


def test_a_call_alone_waits_at_most_the_wait() -> None:
    gatherer, compute = Gatherer(0.05, max_rows=32), Passes()
    started = time.monotonic()
    result = gatherer.run("key", np.ones((1, 2)), compute, CallEnd())
    took = time.monotonic() - started
    assert compute.sizes == [1]
    np.testing.assert_array_equal(result, np.full((1, 2), 10.0))
    assert 0.05 <= took < 5.0  # it waited for company, and not much longer (CI is slow)


def test_wait_zero_and_big_calls_run_alone_at_once() -> None:
    compute = Passes()
    Gatherer(0.0, max_rows=32).run("key", np.ones((1, 2)), compute, CallEnd())
    Gatherer(60.0, max_rows=4).run("key", np.ones((4, 2)), compute, CallEnd())
    assert compute.sizes == [1, 4]


def test_keys_are_gathered_apart() -> None:
    gatherer, compute = Gatherer(WAIT, max_rows=32), Passes()
    start = threading.Barrier(4)

    def call(key: str) -> np.ndarray:
        start.wait(timeout=10)
        return gatherer.run(key, np.ones((1, 1)), compute, CallEnd())

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(call, ["a", "b", "a", "b"]))
    assert compute.sizes == [2, 2]


def test_a_failed_pass_fails_every_call_of_it() -> None:
    gatherer, compute = Gatherer(WAIT, max_rows=32), Passes(fail=True)
    start = threading.Barrier(3)

    def call(_: int) -> str:
        start.wait(timeout=10)
        with pytest.raises(ValueError, match="the pass failed"):
            gatherer.run("key", np.ones((1, 1)), compute, CallEnd())
        return "raised"

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(call, range(3))) == ["raised"] * 3
    assert compute.sizes == [3]


def test_a_call_that_ends_while_it_waits_is_cancelled_and_left_out() -> None:
    gatherer, compute = Gatherer(1.0, max_rows=32), Passes()
    leader_in = threading.Event()
    ending = CallEnd()
    outcome: dict[str, object] = {}

    def leader() -> None:
        leader_in.set()
        outcome["leader"] = gatherer.run("key", np.full((1, 1), 1.0), compute, CallEnd())

    def follower() -> None:
        try:
            gatherer.run("key", np.full((1, 1), 2.0), compute, ending)
        except Cancelled as exc:
            outcome["follower"] = exc

    lead = threading.Thread(target=leader)
    lead.start()
    assert leader_in.wait(timeout=10)
    time.sleep(0.1)  # the leader now holds the open batch
    follow = threading.Thread(target=follower)
    follow.start()
    deadline = time.monotonic() + 10
    while not ending.callbacks and time.monotonic() < deadline:
        time.sleep(0.01)
    ending.end()  # the follower's call is cancelled (or its deadline passes)
    follow.join(timeout=10)
    lead.join(timeout=10)
    assert isinstance(outcome["follower"], Cancelled)
    np.testing.assert_array_equal(outcome["leader"], [[10.0]])
    assert compute.sizes == [1]  # the ended call's rows were not computed


def test_a_call_that_ended_before_it_joined_is_cancelled() -> None:
    gatherer, compute = Gatherer(1.0, max_rows=32), Passes()
    leader_in = threading.Event()
    results: list[np.ndarray] = []

    def leader() -> None:
        leader_in.set()
        results.append(gatherer.run("key", np.ones((1, 1)), compute, CallEnd()))

    lead = threading.Thread(target=leader)
    lead.start()
    assert leader_in.wait(timeout=10)
    time.sleep(0.1)
    with pytest.raises(Cancelled):
        gatherer.run("key", np.ones((1, 1)), compute, CallEnd(ended=True))
    lead.join(timeout=10)
    assert compute.sizes == [1] and len(results) == 1


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_a_split_product_is_the_product(parts: int) -> None:
    rng = np.random.default_rng(parts)
    left, right = rng.random((6, 40), np.float32), rng.random((40, 1001), np.float32)
    product = SplitProduct(parts)
    np.testing.assert_allclose(product(left, right), left @ right, rtol=1e-5)
    # One row alone is the very product a lone call computes.
    np.testing.assert_array_equal(product(left[:1], right), left[:1] @ right)


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_a_split_product_by_a_transposed_matrix_is_the_product(parts: int) -> None:
    # A few queries times the transpose of the movies' row-major vectors, as cosines asks.
    rng = np.random.default_rng(parts)
    left, vectors = rng.random((6, 40), np.float32), rng.random((1001, 40), np.float32)
    product = SplitProduct(parts)
    found = product(left, vectors.T)
    assert found.shape == (6, 1001) and found.flags.c_contiguous
    np.testing.assert_allclose(found, left @ vectors.T, rtol=1e-5)
    np.testing.assert_array_equal(product(left[:1], vectors.T), left[:1] @ vectors.T)


def test_each_pass_is_observed_with_its_rows() -> None:
    seen: list[tuple[str, int]] = []
    gatherer = Gatherer(WAIT, max_rows=32, observe=lambda what, rows: seen.append((what, rows)))
    start = threading.Barrier(3)

    def call(rows: int) -> np.ndarray:
        start.wait(timeout=10)
        key = (object(), "reconstruct", "more")
        return gatherer.run(key, np.ones((rows, 1)), Passes(), CallEnd())

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(call, [1, 2, 3]))
    # Three keys (a new object each): three passes, alone.
    assert sorted(seen) == [("reconstruct", 1), ("reconstruct", 2), ("reconstruct", 3)]
    seen.clear()
    concurrently(gatherer, [np.ones((2, 1))] * 3, Passes())
    assert seen == [("key", 6)]


def test_once_a_key_has_seen_its_caller_alone_a_lone_call_waits_no_more() -> None:
    gatherer, compute = Gatherer(0.5, max_rows=32), Passes()
    timed = []
    for _ in range(3):
        started = time.monotonic()
        gatherer.run("key", np.ones((1, 1)), compute, CallEnd())
        timed.append(time.monotonic() - started)
    assert compute.sizes == [1, 1, 1]
    assert timed[0] >= 0.5  # a new key: it waited for company
    assert max(timed[1:]) < 0.25, timed  # its callers come alone: no waiting for company


def test_the_next_batch_waits_for_as_many_rows_as_the_callers_brought() -> None:
    gatherer, compute = Gatherer(5.0, max_rows=32), Passes()
    concurrently(gatherer, [np.ones((1, 1))] * 3, compute)  # the key's callers: 3 rows
    assert compute.sizes == [3]

    def late(delay: float) -> np.ndarray:
        time.sleep(delay)
        return gatherer.run("key", np.ones((1, 1)), compute, CallEnd())

    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:  # the same callers, coming back 0.1 s apart
        list(pool.map(late, [0.0, 0.1, 0.2]))
    # One pass of all three, started when the third came, long before the 5 s wait ran out.
    assert compute.sizes == [3, 3]
    assert time.monotonic() - started < 2.5


def test_the_gatherer_keeps_no_key_once_its_calls_have_ended() -> None:
    class Version:  # a key holds its model version: deleted, it must be freed
        pass

    version = Version()
    freed = weakref.ref(version)
    gatherer = Gatherer(0.01, max_rows=32)
    gatherer.run((version, "reconstruct"), np.ones((1, 1)), Passes(), CallEnd())
    del version
    gc.collect()
    assert freed() is None
