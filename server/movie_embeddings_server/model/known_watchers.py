"""A dataset model's own watchers by their dataset ids: each one's likes and features, stored
beside the version by the trainer and read memory-mapped by the serving process."""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

FILE = "watchers.npz"
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # a zip member's local header: its names' lengths
_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class Group(NamedTuple):
    """Watchers as the trainer holds them: ids, likes as CSR rows of the catalogue, features
    (float32, NaN = absent)."""

    ids: np.ndarray
    indptr: np.ndarray
    columns: np.ndarray
    age_years: np.ndarray
    education: np.ndarray


def arrays(groups: Sequence[Group]) -> dict[str, np.ndarray]:
    """The file's arrays for every watcher of the groups (the training and the held-out
    ones), sorted by id, each one's likes ascending: what `KnownWatchers` reads."""
    ids = np.concatenate([g.ids for g in groups]).astype(np.int64)
    lengths = np.concatenate([np.diff(g.indptr) for g in groups])
    starts = np.concatenate(
        [g.indptr[:-1] + sum(len(h.columns) for h in groups[:i]) for i, g in enumerate(groups)]
    )
    columns = np.concatenate([g.columns for g in groups]).astype(np.int32)
    order = np.argsort(ids, kind="stable")
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths[order], out=indptr[1:])
    # Entry j of the result is entry j - (its new row's start) + (its old row's start).
    offsets = np.repeat(starts[order] - indptr[:-1], lengths[order])
    offsets += np.arange(indptr[-1])
    likes = columns[offsets]
    del offsets
    ascending = np.diff(likes) > 0
    boundaries = indptr[1:-1]
    ascending[boundaries[(boundaries > 0) & (boundaries < len(likes))] - 1] = True
    if not ascending.all():  # a dataset's rows come sorted: this sort is seldom needed
        row = np.repeat(np.arange(len(ids)), np.diff(indptr))
        likes = likes[np.lexsort((likes, row))]
    return {
        "watcher_ids": ids[order],
        "indptr": indptr,
        "likes": likes,
        "age_years": np.concatenate([g.age_years for g in groups]).astype(np.float32)[order],
        "education": np.concatenate([g.education for g in groups]).astype(np.float32)[order],
    }


def _mapped(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed .npz (np.savez's), memory-mapped read-only: only the
    pages a lookup touches are read (np.load reads every array of an .npz whole)."""
    out = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for member in archive.infolist():
            if member.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: {member.filename} is compressed")
            f.seek(member.header_offset)
            _, name_length, extra_length = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            f.seek(member.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
            read_header = _HEADERS.get(np.lib.format.read_magic(f))
            if read_header is None:
                raise ValueError(f"{path}: {member.filename} has an unknown .npy version")
            shape, fortran, dtype = read_header(f)
            if fortran or dtype.hasobject:
                raise ValueError(f"{path}: {member.filename} is not a plain C-order array")
            name = member.filename.removesuffix(".npy")
            if not np.prod(shape):  # nothing to map (mmap refuses a length of 0)
                out[name] = np.zeros(shape, dtype)
                continue
            out[name] = np.memmap(f, dtype=dtype, mode="r", offset=f.tell(), shape=shape)
    return out


class Watcher(NamedTuple):
    """One watcher: the catalogue rows it liked (ascending), its age and education (NaN when
    absent)."""

    liked_rows: np.ndarray
    age_years: float
    education: float


class KnownWatchers:
    """Every watcher a dataset model kept (trained on or held out), found by its dataset id in
    O(log n) pages of the mapped file."""

    def __init__(self, path: Path) -> None:
        a = _mapped(path)
        self.ids = a["watcher_ids"]
        self._indptr = a["indptr"]
        self._likes = a["likes"]
        self._age_years = a["age_years"]
        self._education = a["education"]

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, watcher_id: int) -> Watcher | None:
        """The watcher with this id, or None when the model kept no such watcher."""
        at = int(np.searchsorted(self.ids, watcher_id))
        if at == len(self.ids) or int(self.ids[at]) != watcher_id:
            return None
        start, end = int(self._indptr[at]), int(self._indptr[at + 1])
        return Watcher(
            np.array(self._likes[start:end], dtype=np.int64),
            float(self._age_years[at]),
            float(self._education[at]),
        )
