"""The serving process keeps what a query frees for the next (malloc.reuse_freed_memory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import ServerProcess

import movie_embeddings as me

CALLS = 20


def _minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (field 10 of /proc/PID/stat)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(after_name[7])  # the list starts at field 3


def test_repeated_batch_queries_reuse_freed_memory_instead_of_faulting_pages_in(
    server: ServerProcess,
) -> None:
    """A 1,000-watcher Reconstruct builds arrays of 0.3-1 MB. By default glibc maps each afresh
    and gives it back when freed, so every call faulted ~1,000 new pages in; the server keeps
    freed memory for reuse, so repeated calls touch (almost) no new page."""
    ratings = (np.random.default_rng(4).random((1000, 80)) < 0.2).astype(np.float32)
    ages, education = np.full(1000, 30.0, np.float32), np.ones(1000, np.int64)
    with me.Client(server.target) as client:
        for _ in range(5):  # warm-up: the heap grows to what a call needs
            client.reconstruct_batch(ratings, age_years=ages, education=education, top_k=10)
        before = _minor_faults(server.process.pid)
        for _ in range(CALLS):
            client.reconstruct_batch(ratings, age_years=ages, education=education, top_k=10)
        per_call = (_minor_faults(server.process.pid) - before) / CALLS
    assert per_call < 100, f"{per_call:.0f} minor page faults per call"
