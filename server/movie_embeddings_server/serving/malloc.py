"""How the process's C allocator treats large freed blocks (glibc only)."""

from __future__ import annotations

import ctypes

# glibc's mallopt parameters (malloc.h) and the size kept for reuse under both.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 32 << 20


def reuse_freed_memory() -> None:
    """Keep what a query frees for the next query instead of handing it back to the kernel.
    By default glibc maps a large array afresh and trims the heap behind it, so each new
    0.3-1 MB array of a query page-faults on every 4 kB page it touches: for 1,000 watchers'
    Reconstruct over 80 movies that was ~1.5 of the top-k's 2 ms here. Arrays under 32 MiB
    now come from the heap, which keeps up to 32 MiB free. Nothing happens where the C
    library is not glibc. Process-wide: the server calls it at start; a client process moving
    large batches can have the same from GLIBC_TUNABLES (see the README)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES)
    libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


def give_back_freed_memory() -> None:
    """Hand the pages of memory freed so far back to the kernel now (glibc's malloc_trim):
    after one step of a large job (an import), so that what it kept for reuse does not add
    to the next step's peak. Costs a walk over the heap; nothing happens elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)
