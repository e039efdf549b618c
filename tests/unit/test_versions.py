"""Numbered version directories on their own: commit, retire, staging leftovers, small files."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from movie_embeddings_server.errors import ResourceExhausted
from movie_embeddings_server.store import versions


def _staged(parent: Path, marker: str) -> Path:
    staged = versions.staging_dir(parent)
    versions.write_file(staged / "marker", marker.encode())
    return staged


def test_a_failed_commit_removes_its_staged_directory_and_takes_no_number(tmp_path: Path) -> None:
    def refuse(staged: Path, version: int) -> None:
        raise RuntimeError(f"no version {version} today")

    staged = _staged(tmp_path, "a")
    with pytest.raises(RuntimeError, match="no version 1 today"):
        versions.commit(tmp_path, staged, refuse)
    assert not staged.exists()
    assert versions.commit(tmp_path, _staged(tmp_path, "b")) == 1
    assert (tmp_path / "1" / "marker").read_text() == "b"


def test_the_label_callback_sees_the_number_before_the_rename(tmp_path: Path) -> None:
    versions.commit(tmp_path, _staged(tmp_path, "a"))

    def label(staged: Path, version: int) -> None:
        versions.write_file(staged / "version", str(version).encode())

    assert versions.commit(tmp_path, _staged(tmp_path, "b"), label) == 2
    assert (tmp_path / "2" / "version").read_text() == "2"


def test_discarding_what_is_gone_already_is_fine(tmp_path: Path) -> None:
    staged = _staged(tmp_path, "a")
    versions.discard(staged)
    versions.discard(staged)
    assert not staged.exists()


def test_a_retired_version_keeps_its_number_empty_subdirectories_and_all(tmp_path: Path) -> None:
    versions.commit(tmp_path, _staged(tmp_path, "a"))
    (tmp_path / "1" / "inner" / "deeper").mkdir(parents=True)
    (tmp_path / "1" / "inner" / "deeper" / "file").write_bytes(b"x")
    versions.retire(tmp_path, 1)
    assert list((tmp_path / f"{versions.DELETED_PREFIX}1").iterdir()) == []
    assert versions.version_numbers(tmp_path) == []
    assert versions.commit(tmp_path, _staged(tmp_path, "b")) == 2


def test_a_stale_staging_directory_is_removed_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stale, recent = _staged(tmp_path, "a"), _staged(tmp_path, "b")
    old = time.time() - versions.STALE_STAGING_SECONDS - 60
    os.utime(stale, (old, old))
    with caplog.at_level(logging.INFO, logger="movie_embeddings_server.store.versions"):
        assert versions.version_numbers(tmp_path) == []
    assert caplog.messages == [f"removing {stale}, left by an unfinished write"]
    assert not stale.exists() and recent.exists()


def test_a_staging_directory_committed_while_the_poll_looks_at_it_is_no_error(
    tmp_path: Path,
) -> None:
    """A replica's poll lists a writer's staging directory, which the writer renames into a
    version before the poll reads its age (seen in CI)."""
    staged = _staged(tmp_path, "a")
    versions.commit(tmp_path, staged)
    versions.remove_if_stale(staged)
    assert versions.version_numbers(tmp_path) == [1]


def test_replace_file_leaves_no_staged_file_when_the_rename_fails(tmp_path: Path) -> None:
    target = tmp_path / "labels.json"
    target.mkdir()
    (target / "occupied").write_bytes(b"")  # a non-empty directory cannot be replaced
    with pytest.raises(OSError):
        versions.replace_file(target, b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json"]


@pytest.mark.parametrize(
    "write",
    [
        lambda path: versions.write_file(path, b"data"),
        lambda path: versions.write_npz(path, {"a": np.zeros(10_000)}),
    ],
    ids=["file", "npz"],
)
def test_a_write_on_a_full_device_is_resource_exhausted_naming_what_and_the_file(write) -> None:  # type: ignore[no-untyped-def]
    # /dev/full: every write fails ENOSPC, as on a full disk
    with pytest.raises(ResourceExhausted) as info, versions.storing("the thing"):
        write(Path("/dev/full"))
    assert str(info.value) == (
        "no space to write the thing (full): No space left on device; nothing was stored"
    )


def test_other_write_errors_pass_through_storing(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError), versions.storing("the thing"):
        versions.write_file(tmp_path, b"data")
