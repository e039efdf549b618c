"""Concurrent calls on one model version gathered into one pass over its layer (dynamic
batching, as Triton's batcher and TensorFlow Serving's batching session do).

Reading a 59,047-movie output layer once costs the same for one watcher as for several: memory
bandwidth bounds it. The first call to arrive leads a batch: it waits up to `wait` seconds
(or until `max_rows` rows have come), runs the pass for every row gathered, then each call's
own `finish` of its slice (a top k: right after the pass, on its caches, where the calls' own
threads, woken after a pass that streamed the layer through both cores, took several times
longer), and hands each call its result; the others wait for theirs. No thread of its own: a
call alone never waits more than `wait`. Each call checks its own input before it joins and
builds its answer from its result after, so errors and answers stay per call; a call that ends
while it waits (cancelled, past its deadline) is woken at once and its rows are left out if
the pass has not begun.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import Cancelled

# `on_end(callback)`: run `callback` when the caller's call ends (gRPC's context.add_callback);
# False if it has ended already.
OnEnd = Callable[[Callable[[], None]], bool]
SEEN_KEYS = 1024  # keys (model version, what is computed) whose callers' rows are remembered


class SplitProduct:
    """left @ right, a gathered pass's product: with several rows on the left, right's columns
    are split over one thread per core (numpy frees the GIL, each thread uses one BLAS thread),
    so that the one pass many calls share uses every core; one row alone stays one
    matrix-vector product on its caller's thread, as a lone call's."""

    def __init__(self, parts: int | None = None) -> None:
        self.parts = parts or len(os.sched_getaffinity(0))
        self._pool = ThreadPoolExecutor(self.parts, "gathered-pass") if self.parts > 1 else None

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        if self._pool is None or len(left) == 1:
            return left @ right
        out = np.empty((len(left), right.shape[1]), np.result_type(left, right))
        bounds = np.linspace(0, right.shape[1], self.parts + 1).astype(int)

        def part(i: int) -> None:
            columns = slice(bounds[i], bounds[i + 1])
            if right.flags.f_contiguous:
                # The transpose of a row-major matrix (queries times the movies' vectors):
                # OpenBLAS multiplies it ~2x faster the other way round (8 queries x 59,047
                # x 200: 2.3 against 4.5 ms on two cores).
                out[:, columns] = (right[:, columns].T @ left.T).T
            else:
                np.matmul(left, right[:, columns], out=out[:, columns])

        list(self._pool.map(part, range(self.parts)))
        return out


class _Call:
    """One call's rows in a batch, and what it gets back."""

    __slots__ = ("done", "error", "finish", "gone", "result", "rows")

    def __init__(self, rows: np.ndarray, finish: Callable[[np.ndarray], Any]) -> None:
        self.rows = rows
        self.finish = finish
        self.done = threading.Event()
        self.gone = False  # ended while it waited: nobody reads its result
        self.result: Any = None
        self.error: BaseException | None = None

    def end(self) -> None:
        self.gone = True
        self.done.set()


class _Batch:
    __slots__ = ("calls", "not_before", "rows", "target")

    def __init__(self, first: _Call, target: int) -> None:
        self.calls = [first]
        self.rows = len(first.rows)
        self.target = target  # rows it starts with, unless its wait runs out first
        self.not_before = 0.0  # set when the key's previous pass ends: that end + wait


class Gatherer:
    """Gathers the rows of concurrent calls that share a key (a model version and what is
    computed on it) into one `compute` of them all; `wait` 0 turns gathering off."""

    def __init__(
        self, wait: float, max_rows: int, observe: Callable[[str, int], None] | None = None
    ) -> None:
        self.wait = wait
        self.max_rows = max_rows
        # observe(what, rows) after each pass: `what` is a (version, what, ...) key's second.
        self.observe = observe
        self._lock = threading.Lock()
        # Notified when a batch fills or a pass ends.
        self._changed = threading.Condition(self._lock)
        self._open: dict[Hashable, _Batch] = {}
        self._passing: dict[Hashable, int] = {}  # passes under way, by key
        # By key's hash: the rows of its last pass and of the calls waiting when it ended, i.e.
        # how many rows its callers bring at once; the next batch waits for that many. The
        # hash, not the key: a key holds its model version, which must not outlive its
        # deletion here (a hash that comes again misplaces a wait target, nothing more).
        self._seen: dict[int, int] = {}

    def run(
        self,
        key: Hashable,
        rows: np.ndarray,
        compute: Callable[[np.ndarray], np.ndarray],
        on_end: OnEnd,
        finish: Callable[[np.ndarray], Any] = lambda result: result,
    ) -> Any:
        """finish(compute(rows)), the compute possibly part of a larger compute of other
        calls' rows stacked with them (its result's rows are each input row's, in order), and
        `finish` of this call's rows run by the thread that ran the pass, right after it, while
        the result is in its caches. Cancelled when the call ends while it waits."""
        if self.wait <= 0 or len(rows) >= self.max_rows:
            return finish(compute(rows))
        call = _Call(rows, finish)
        with self._lock:
            batch = self._open.get(key)
            if batch is not None and batch.rows + len(rows) <= self.max_rows:
                batch.calls.append(call)
                batch.rows += len(rows)
                if batch.rows >= batch.target:
                    self._changed.notify_all()
                leads = False
            else:  # none open, or this call would overfill it: a new one, led by this call
                target = self._seen.get(hash(key), self.max_rows)  # a new key: all its wait
                batch = self._open[key] = _Batch(call, target)
                leads = True
        if leads:
            self._lead(key, batch, compute)
        elif on_end(call.end):
            call.done.wait()
        else:
            call.end()  # it ended before it could be told
        if call.error is not None:
            raise call.error
        if call.result is None:
            raise Cancelled("the call ended while it waited for its batch")
        return call.result

    def _lead(
        self, key: Hashable, batch: _Batch, compute: Callable[[np.ndarray], np.ndarray]
    ) -> None:
        """Gather until the batch holds as many rows as the key's callers brought last time
        (all of `wait` for a new key), for `wait` seconds at most, and on while the key's
        previous pass runs (the calls that come meanwhile join this one: a pass already uses
        every core) and, for as many rows, up to `wait` after it ends (its callers' next calls
        come a round trip later: without waiting for them, 8 callers settle into two
        alternating passes of 4, each costing nearly what one of 8 does); then compute every
        call's rows at once. A call alone waits `wait` at most, and once its key has seen it
        alone, not at all."""
        until = time.monotonic() + self.wait
        with self._lock:
            while batch.rows < self.max_rows:
                passing = key in self._passing
                if batch.rows >= batch.target and not passing:
                    break
                left = max(until, batch.not_before) - time.monotonic()
                if left <= 0 and not passing:
                    break
                self._changed.wait(left if left > 0 else None)
            if self._open.get(key) is batch:
                del self._open[key]
            self._passing[key] = self._passing.get(key, 0) + 1
        try:
            self._pass(key, batch, compute)
        finally:
            with self._lock:
                self._passing[key] -= 1
                if not self._passing[key]:
                    del self._passing[key]
                    waiting = self._open.get(key)
                    seen = batch.rows + (waiting.rows if waiting is not None else 0)
                    self._remember(key, seen)
                    if waiting is not None:
                        waiting.target = min(seen, self.max_rows)
                        waiting.not_before = time.monotonic() + self.wait
                self._changed.notify_all()

    def _remember(self, key: Hashable, rows: int) -> None:
        """What `key`'s callers brought, the oldest key forgotten past SEEN_KEYS."""
        self._seen.pop(hash(key), None)
        self._seen[hash(key)] = rows
        if len(self._seen) > SEEN_KEYS:
            del self._seen[next(iter(self._seen))]

    def _pass(
        self, key: Hashable, batch: _Batch, compute: Callable[[np.ndarray], np.ndarray]
    ) -> None:
        leader, *others = batch.calls
        calls = [leader, *[c for c in others if not c.gone]]
        if self.observe is not None:
            what = str(key[1] if isinstance(key, tuple) else key)
            self.observe(what, sum(len(c.rows) for c in calls))
        try:
            if len(calls) == 1:
                results = compute(leader.rows)
            else:
                results = compute(np.concatenate([c.rows for c in calls]))
        except Exception as exc:  # every call of the batch fails as the pass did
            for c in calls:
                c.error = exc
        else:
            start = 0
            for c in calls:
                try:  # each call's own failure is its own
                    c.result = c.finish(results[start : start + len(c.rows)])
                except Exception as exc:
                    c.error = exc
                start += len(c.rows)
        finally:
            for c in others:
                c.done.set()
