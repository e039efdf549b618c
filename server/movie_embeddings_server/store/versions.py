"""Numbered version directories (`<parent>/<version>/`) written atomically; models and datasets."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import InvalidArgument, ResourceExhausted, quoted

log = logging.getLogger(__name__)

NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
NAME_RE = re.compile(NAME_PATTERN)
VERSION_RE = re.compile(r"[1-9][0-9]*")
TMP_PREFIX = ".tmp-"
# What a retired (deleted) version's directory is renamed to: its number is never given out
# again, so a reference to it (a model trained on a deleted dataset) never names other data.
DELETED_PREFIX = ".deleted-"
LOCK_FILE = ".lock"
DATASETS_DIR = "datasets"  # <data-dir>/datasets holds the dataset store, beside the models
STALE_STAGING_SECONDS = 3600.0  # a staging directory this old belongs to no live writer
# A write refused for lack of space: a full disk, a quota, a file size limit (RLIMIT_FSIZE).
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def check_store_name(field: str, name: str) -> str:
    """A name that cannot leave the store's directory."""
    if not NAME_RE.fullmatch(name):
        raise InvalidArgument(field, f"must match {NAME_PATTERN}, got {quoted(name)}")
    return name


@contextlib.contextmanager
def storing(what: str, outcome: str = "nothing was stored") -> Iterator[None]:
    """The block's write refused for lack of space ends RESOURCE_EXHAUSTED, naming `what` and
    the file (its writer cleans up; what was stored before stays as it was)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        file = f" ({Path(exc.filename).name})" if exc.filename else ""
        raise ResourceExhausted(
            f"no space to write {what}{file}: {exc.strerror}; {outcome}"
        ) from exc


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError of the block names `path` (a failed write() names no file; a staged copy's
    name means nothing to a caller)."""
    try:
        yield
    except OSError as exc:
        exc.filename = str(path)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_file(path: Path, data: bytes) -> None:
    with naming(path), open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_file(path: Path, data: bytes) -> None:
    """Replace a small file at once (a reader sees the old or the new one, never a mix)."""
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        with naming(path):  # the file it replaces, not its staged copy
            write_file(staged, data)
            os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Arrays only (no pickles), uncompressed: written and read at disk speed."""
    with naming(path), open(path, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)
        f.flush()
        os.fsync(f.fileno())


def staging_dir(parent: Path) -> Path:
    """A new hidden directory under `parent` to write a version into; not yet a version."""
    staged = parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    staged.mkdir(parents=True)
    return staged


def discard(staged: Path) -> None:
    shutil.rmtree(staged, ignore_errors=True)


def remove_if_stale(staged: Path) -> None:
    """A staging directory left by a killed writer; a recent one may be another process's
    work in progress (replicas can share a store), so it is left alone. One that vanishes
    while we look was committed or discarded by its writer."""
    try:
        age = time.time() - staged.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_STAGING_SECONDS:
        log.info("removing %s, left by an unfinished write", staged)
        shutil.rmtree(staged, ignore_errors=True)


def version_numbers(parent: Path) -> list[int]:
    """The complete versions under `parent`, ascending; stale staging directories removed."""
    found = []
    for path in parent.iterdir() if parent.is_dir() else ():
        if path.name.startswith(TMP_PREFIX):
            remove_if_stale(path)
        elif VERSION_RE.fullmatch(path.name):
            found.append(int(path.name))
    return sorted(found)


@contextlib.contextmanager
def locked(parent: Path) -> Iterator[None]:
    """An exclusive lock on `<parent>/.lock`, which holds across processes sharing the store
    and is released by the kernel if its holder dies."""
    with open(parent / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def commit(parent: Path, staged: Path, label: Callable[[Path, int], None] | None = None) -> int:
    """Rename a staged directory to the next version number, chosen under the lock, and
    return it; `label(staged, version)` may first write the number into the version. The
    staged directory is removed if anything fails."""
    try:
        with locked(parent):
            numbers = [
                int(p.name.removeprefix(DELETED_PREFIX))
                for p in parent.iterdir()
                if VERSION_RE.fullmatch(p.name.removeprefix(DELETED_PREFIX))
            ]
            version = max(numbers, default=0) + 1
            if label:
                label(staged, version)
            os.rename(staged, parent / str(version))
            fsync_dir(parent)
    except BaseException:
        discard(staged)
        raise
    return version


def retire(parent: Path, version: int, check: Callable[[], None] | None = None) -> None:
    """Make a version disappear at once (one rename), then free its space; its number is
    kept by an empty `.deleted-<version>` directory. `check()`, run under the lock first,
    may refuse by raising (e.g. a label written by another process names the version)."""
    gone = parent / f"{DELETED_PREFIX}{version}"
    with locked(parent):
        if check:
            check()
        os.rename(parent / str(version), gone)
        fsync_dir(parent)
    for path in gone.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
