"""A dataset model's known watchers: the trainer's groups merged by id, read back mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from movie_embeddings_server.model import known_watchers as kw
from movie_embeddings_server.store.versions import write_npz

NAN = np.nan


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def _saved(tmp_path: Path, *groups: kw.Group) -> kw.KnownWatchers:
    write_npz(tmp_path / kw.FILE, kw.arrays(list(groups)))
    return kw.KnownWatchers(tmp_path / kw.FILE)


def test_groups_are_merged_by_id_with_each_ones_likes_and_features(tmp_path: Path) -> None:
    trained = kw.Group(
        np.array([5, 2, 9]),
        np.array([0, 2, 2, 5]),
        np.array([3, 1, 4, 0, 2]),
        _f32(30, NAN, 20),
        _f32(1, 2, NAN),
    )
    heldout = kw.Group(
        np.array([7, 1]), np.array([0, 1, 3]), np.array([8, 6, 5]), _f32(40, 41), _f32(0, 0)
    )
    known = _saved(tmp_path, trained, heldout)
    assert len(known) == 5 and known.ids.tolist() == [1, 2, 5, 7, 9]
    assert isinstance(known.ids, np.memmap)  # read page by page, not whole
    expected = {1: ([5, 6], 41, 0), 2: ([], NAN, 2), 5: ([1, 3], 30, 1), 7: ([8], 40, 0)}
    expected[9] = ([0, 2, 4], 20, NAN)
    for watcher_id, (likes, age, education) in expected.items():
        found = known.find(watcher_id)
        assert found is not None
        assert found.liked_rows.tolist() == likes  # ascending, whatever order they came in
        np.testing.assert_array_equal([found.age_years, found.education], [age, education])
    for missing in (0, 3, 6, 10, -1, 2**62):
        assert known.find(missing) is None


def test_no_likes_at_all_still_reads(tmp_path: Path) -> None:
    group = kw.Group(
        np.array([3, 1]), np.array([0, 0, 0]), np.array([], np.int32), _f32(1, 2), _f32(NAN, NAN)
    )
    found = _saved(tmp_path, group).find(3)
    assert found is not None and found.liked_rows.size == 0 and found.age_years == 1


def test_a_compressed_file_is_refused(tmp_path: Path) -> None:
    group = kw.Group(np.array([1]), np.array([0, 1]), np.array([2]), _f32(1), _f32(1))
    np.savez_compressed(tmp_path / kw.FILE, **kw.arrays([group]))
    with pytest.raises(ValueError, match="is compressed"):
        kw.KnownWatchers(tmp_path / kw.FILE)
