"""Versions on disk: numbering, resolution, names, and crash/damage tolerance."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_until

from movie_embeddings_server import errors
from movie_embeddings_server.model.catalogue import Catalogue
from movie_embeddings_server.store import loaded, versions
from movie_embeddings_server.store import models as store
from movie_embeddings_server.store.models import Store

MOVIES = 10
DIM = 3


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {
        "embedding": (MOVIES, DIM),
        "hidden_kernel": (2 + DIM, 4),
        "hidden_bias": (4,),
        "output_kernel": (4, MOVIES),
        "output_bias": (MOVIES,),
    }
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def _meta(seed: int = 0) -> dict:
    return store.new_metadata(
        age_mean=40.0 + seed,
        age_std=11.5,
        synthetic={"num_watchers": 100, "num_movies": MOVIES, "num_types": 5, "seed": seed},
        training={"preset": "default", "epochs": 2},
        metrics={"loss": 0.3},
    )


def _save(s: Store, name: str = "default", seed: int = 0):
    return s.commit(name, s.stage(name, None, _weights(seed), _meta(seed)))


def _damaged(tmp_path: Path, version: int) -> Path:
    """A version directory of model `default` whose metadata is not JSON."""
    damaged = tmp_path / "default" / str(version)
    damaged.mkdir()
    (damaged / store.METADATA).write_text("{not json")
    return damaged


def test_new_metadata_has_a_utc_create_time() -> None:
    meta = _meta(3)
    created = datetime.fromisoformat(meta["create_time"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
    assert meta["age_mean"] == 43.0
    assert meta["synthetic"]["seed"] == 3


def test_versions_are_numbered_from_one_per_name(tmp_path: Path) -> None:
    s = Store(tmp_path)
    assert [_save(s, "default", i).version for i in range(3)] == [1, 2, 3]
    assert [_save(s, "other", i).version for i in range(2)] == [1, 2]
    versions = (p.name for p in (tmp_path / "default").iterdir() if p.name != ".lock")
    assert sorted(versions) == ["1", "2", "3"]


def test_save_returns_the_served_version(tmp_path: Path) -> None:
    served = _save(Store(tmp_path), "m1", seed=4)
    assert (served.name, served.version) == ("m1", 1)
    np.testing.assert_array_equal(served.embedding, _weights(4)["embedding"])
    assert served.age_mean == 44.0
    assert served.age_std == 11.5


def test_version_zero_is_the_newest(tmp_path: Path) -> None:
    s = Store(tmp_path)
    for i in range(3):
        _save(s, seed=i)
    newest = s.resolve("default", 0)
    assert newest.version == 3
    np.testing.assert_array_equal(newest.embedding, _weights(2)["embedding"])
    assert s.resolve("default", 2).version == 2
    np.testing.assert_array_equal(s.resolve("default", 1).embedding, _weights(0)["embedding"])


def test_empty_name_means_default(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s, "default")
    assert s.resolve("", 0).name == "default"
    assert store.check_name("model_name", "") == "default"


def test_empty_store_is_failed_precondition(tmp_path: Path) -> None:
    s = Store(tmp_path)
    assert s.is_empty()
    with pytest.raises(errors.FailedPrecondition):
        s.resolve("default", 0)
    assert s.load_new() == 0
    with pytest.raises(errors.FailedPrecondition):
        s.resolve("", 0)


def test_unknown_name_is_not_found(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s)
    assert not s.is_empty()
    with pytest.raises(errors.NotFound, match="nope"):
        s.resolve("nope", 0)


def test_unknown_version_is_not_found(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s)
    _save(s)
    with pytest.raises(errors.NotFound, match="3"):
        s.resolve("default", 3)


def test_negative_version_is_invalid(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s)
    with pytest.raises(errors.InvalidArgument) as exc:
        s.resolve("default", -1)
    assert exc.value.field == "model.version"


@pytest.mark.parametrize(
    "name", ["../etc", "..", ".", "A", "Default", "a/b", "a b", "-a", "_a", "a" * 65, "é", "a\n"]
)
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    s = Store(tmp_path)
    _save(s)
    with pytest.raises(errors.InvalidArgument) as exc:
        s.resolve(name, 0)
    assert exc.value.field == "model.name"
    with pytest.raises(errors.InvalidArgument) as exc:
        store.check_name("model_name", name)
    assert exc.value.field == "model_name"
    with pytest.raises(errors.InvalidArgument):
        s.list(name)


@pytest.mark.parametrize("name", ["default", "a", "0", "a" * 64, "my-model_2"])
def test_valid_names(name: str) -> None:
    assert store.check_name("model_name", name) == name


def test_list_is_sorted_by_name_then_version(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s, "zeta")
    _save(s, "alpha")
    _save(s, "zeta")
    assert [(m.name, m.version) for m in s.list()] == [("alpha", 1), ("zeta", 1), ("zeta", 2)]
    assert [(m.name, m.version) for m in s.list("zeta")] == [("zeta", 1), ("zeta", 2)]
    assert s.list("missing") == []


def test_fresh_store_loads_identical_weights_and_metadata(tmp_path: Path) -> None:
    s = Store(tmp_path)
    saved = [_save(s, "default", i) for i in range(2)] + [_save(s, "other", 7)]
    fresh = Store(tmp_path)
    assert fresh.load_new() == 3
    for before in saved:
        after = fresh.resolve(before.name, before.version)
        on_disk = tmp_path / before.name / str(before.version) / store.METADATA
        assert after.meta == before.meta == json.loads(on_disk.read_text())
        for name in ("embedding", "input_to_hidden", "negated_output"):
            np.testing.assert_array_equal(getattr(after, name), getattr(before, name))
            assert getattr(after, name).dtype == np.float32
        assert (after.age_mean, after.age_std) == (before.age_mean, before.age_std)
    assert fresh.resolve("default", 0).version == 2


def test_metadata_on_disk_is_json(tmp_path: Path) -> None:
    _save(Store(tmp_path), seed=5)
    meta = json.loads((tmp_path / "default" / "1" / store.METADATA).read_text())
    assert meta["age_mean"] == 45.0
    assert meta["training"] == {"preset": "default", "epochs": 2}


def test_staged_but_uncommitted_version_is_invisible(tmp_path: Path) -> None:
    # A crash between writing a version and renaming it into place leaves no visible version.
    s = Store(tmp_path)
    _save(s, seed=0)
    staged = s.stage("default", None, _weights(1), _meta(1))
    assert staged.exists()
    fresh = Store(tmp_path)
    assert fresh.load_new() == 1
    assert [m.version for m in fresh.list()] == [1]
    np.testing.assert_array_equal(fresh.resolve("default", 0).embedding, _weights(0)["embedding"])
    # ... and the leftover does not disturb the numbering of the next version.
    assert _save(fresh, seed=2).version == 2


def test_a_stale_staging_directory_is_removed_at_load_a_recent_one_kept(tmp_path: Path) -> None:
    s = Store(tmp_path)
    stale = s.stage("default", None, _weights(1), _meta(1))
    recent = s.stage("default", None, _weights(2), _meta(2))
    old = time.time() - versions.STALE_STAGING_SECONDS - 60
    os.utime(stale, (old, old))
    assert Store(tmp_path).load_new() == 0
    assert not stale.exists()
    assert recent.exists()  # perhaps another replica's training in progress


def test_staged_version_of_a_new_name_is_invisible(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.stage("brand-new", None, _weights(1), _meta(1))
    fresh = Store(tmp_path)
    assert fresh.load_new() == 0
    assert fresh.is_empty()
    with pytest.raises(errors.FailedPrecondition):
        fresh.resolve("brand-new", 0)


def test_commit_makes_a_staged_version_visible(tmp_path: Path) -> None:
    s = Store(tmp_path)
    staged = s.stage("default", None, _weights(1), _meta(1))
    served = s.commit("default", staged)
    assert served.version == 1
    assert not staged.exists()
    assert Store(tmp_path).load_new() == 1


def test_discard_removes_a_staged_version(tmp_path: Path) -> None:
    s = Store(tmp_path)
    staged = s.stage("default", None, _weights(1), _meta(1))
    s.discard(staged)
    assert not staged.exists()


def test_damaged_version_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Store(tmp_path)
    _save(s, seed=0)
    _save(s, seed=1)
    damaged = _damaged(tmp_path, 3)
    fresh = Store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="movie_embeddings_server.store.loaded"):
        assert fresh.load_new() == 2
    assert [m.version for m in fresh.list()] == [1, 2]
    assert fresh.resolve("default", 0).version == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(damaged) in warnings[0].getMessage()


@pytest.mark.parametrize("damage", ["missing_weights", "garbage_weights", "missing_key", "no_meta"])
def test_other_damage_is_skipped_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    s = Store(tmp_path)
    _save(s, seed=0)
    _save(s, seed=1)
    version = tmp_path / "default" / "2"
    weights = version / store.WEIGHTS
    if damage == "missing_weights":
        weights.unlink()
    elif damage == "garbage_weights":
        weights.write_bytes(b"not a zip file at all")
    elif damage == "missing_key":
        meta = json.loads((version / store.METADATA).read_text())
        del meta["age_std"]
        (version / store.METADATA).write_text(json.dumps(meta))
    else:
        (version / store.METADATA).unlink()
    fresh = Store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="movie_embeddings_server.store.loaded"):
        assert fresh.load_new() == 1
    assert fresh.resolve("default", 0).version == 1
    assert any("2" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_truncated_weights_are_skipped_without_leaking_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a torn write of weights.npz looks like: a zip that ends early.
    s = Store(tmp_path)
    _save(s, seed=0)
    _save(s, seed=1)
    weights = tmp_path / "default" / "2" / store.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    # The warning's record would keep the exception (and any file it holds) alive past this
    # test; silence it so that a leaked open file is collected, and reported, right here.
    monkeypatch.setattr(loaded.log, "disabled", True)
    fresh = Store(tmp_path)
    assert fresh.load_new() == 1
    gc.collect()
    assert [m.version for m in fresh.list()] == [1]


def test_a_new_version_after_a_damaged_one_gets_a_fresh_number(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s)
    (tmp_path / "default" / "2").mkdir()  # damaged: empty
    assert _save(s).version == 3


def test_stray_files_and_dirs_are_ignored(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s)
    (tmp_path / "README").write_text("not a model")
    (tmp_path / "Bad Name").mkdir()
    (tmp_path / "default" / "notes.txt").write_text("x")
    (tmp_path / "default" / "01").mkdir()
    fresh = Store(tmp_path)
    assert fresh.load_new() == 1
    assert [(m.name, m.version) for m in fresh.list()] == [("default", 1)]


def test_store_creates_its_root(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    Store(root)
    assert root.is_dir()


def _versions(s: Store, name: str = "default") -> list[int]:
    return [m.version for m in s.list(name)]


def _on_disk(root: Path, name: str = "default") -> list[int]:
    return versions.version_numbers(root / name)


def test_delete_one_version_from_disk_and_memory_its_number_never_reused(tmp_path: Path) -> None:
    s = Store(tmp_path)
    for i in range(3):
        _save(s, seed=i)
    held = s.resolve("default", 2)
    assert [m.version for m in s.delete("default", 2)] == [2]
    assert _versions(s) == _on_disk(tmp_path) == [1, 3]
    with pytest.raises(errors.NotFound, match="no version 2"):
        s.resolve("default", 2)
    np.testing.assert_array_equal(held.embedding, _weights(1)["embedding"])  # still usable
    assert _save(s, seed=4).version == 4
    with pytest.raises(errors.NotFound):
        s.delete("default", 2)


def test_delete_version_zero_deletes_every_version_of_the_name(tmp_path: Path) -> None:
    s = Store(tmp_path)
    for i in range(2):
        _save(s, seed=i)
    _save(s, "other")
    assert [(m.name, m.version) for m in s.delete("default", 0)] == [("default", 1), ("default", 2)]
    assert [(m.name, m.version) for m in s.list()] == [("other", 1)]
    assert _on_disk(tmp_path) == []
    with pytest.raises(errors.NotFound, match="'default' not found"):
        s.delete("default", 0)
    assert _save(s).version == 3


def test_a_label_resolves_to_its_version(tmp_path: Path) -> None:
    s = Store(tmp_path)
    for i in range(3):
        _save(s, seed=i)
    assert s.set_label("default", "stable", 2) == {"stable": 2}
    assert s.resolve("default", 0, label="stable").version == 2
    assert s.resolve("default", 2, label="stable").version == 2  # both, agreeing
    with pytest.raises(errors.InvalidArgument, match="names version 2") as exc:
        s.resolve("default", 3, label="stable")
    assert exc.value.field == "model.label"
    with pytest.raises(errors.NotFound, match="no label 'canary'"):
        s.resolve("default", 0, label="canary")
    assert s.labels_of(s.resolve("default", 2)) == ["stable"]
    assert s.set_label("default", "stable", 3) == {"stable": 3}  # moved
    assert s.resolve("default", 0, label="stable").version == 3
    assert s.set_label("default", "stable", 0) == {}  # removed
    assert s.set_label("default", "stable", 0) == {}  # removing again: nothing happens
    assert json.loads((tmp_path / "default" / store.LABELS).read_text()) == {}


def test_a_resolution_is_remembered_until_a_version_or_label_changes(tmp_path: Path) -> None:
    """`resolve` answers a repeated query from what it found last: each change, here or seen
    at a poll, must start that over (each query is asked before and after each change)."""
    s, other = Store(tmp_path), Store(tmp_path)

    def newest() -> int:
        return s.resolve("", 0).version

    def stable() -> int:
        return s.resolve("", 0, label="stable").version

    _save(s, seed=0)
    assert newest() == 1 and s.resolve("", 0) is s.resolve("", 0)
    _save(s, seed=1)  # a new version here
    assert newest() == 2
    _save(other, seed=2)  # and one from another process, at the poll
    s.load_new()
    assert newest() == 3
    s.set_label("default", "stable", 1)
    assert stable() == 1
    s.set_label("default", "stable", 2)  # moved here
    assert stable() == 2
    other.set_label("default", "stable", 1)  # moved by another process
    s.load_new()
    assert stable() == 1
    assert newest() == 3
    s.delete("default", 3)
    assert newest() == 2
    other.load_new()
    other.delete("default", 2)  # deleted by another process
    s.load_new()
    assert newest() == 1
    with pytest.raises(errors.NotFound, match="no version 2"):
        s.resolve("default", 2)
    s.set_label("default", "stable", 0)  # removed
    with pytest.raises(errors.NotFound, match="no label 'stable'"):
        stable()


@pytest.mark.parametrize("label", ["", "1", "Stable", "-x", "a b", "x" * 65])
def test_malformed_labels_are_refused(tmp_path: Path, label: str) -> None:
    s = Store(tmp_path)
    _save(s)
    with pytest.raises(errors.InvalidArgument) as exc:
        s.set_label("default", label, 1)
    assert exc.value.field == "label"
    if label:
        with pytest.raises(errors.InvalidArgument) as exc:
            s.resolve("default", 0, label=label)
        assert exc.value.field == "model.label"


def test_labelling_a_missing_version_or_model_is_not_found(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s)
    with pytest.raises(errors.NotFound, match=r"no version 5 \(has \[1\]\)"):
        s.set_label("default", "stable", 5)
    with pytest.raises(errors.NotFound, match="'nope' not found"):
        s.set_label("nope", "stable", 1)
    with pytest.raises(errors.InvalidArgument) as exc:
        s.set_label("default", "stable", -1)
    assert exc.value.field == "version"


def _three_versions_with_version_1_labelled(tmp_path: Path) -> Store:
    """Versions 1-3 of default, version 1 labelled stable and canary."""
    s = Store(tmp_path)
    for i in range(3):
        _save(s, seed=i)
    s.set_label("default", "stable", 1)
    s.set_label("default", "canary", 1)
    return s


def test_a_labelled_version_cannot_be_deleted_until_unlabelled(tmp_path: Path) -> None:
    s = _three_versions_with_version_1_labelled(tmp_path)
    with pytest.raises(errors.FailedPrecondition, match="version 1 is labelled canary, stable"):
        s.delete("default", 1)
    with pytest.raises(errors.FailedPrecondition, match="version 1 is labelled"):
        s.delete("default", 0, label="stable")
    with pytest.raises(errors.FailedPrecondition):
        s.delete("default", 0)  # every version: refused whole, nothing deleted
    assert _versions(s) == _on_disk(tmp_path) == [1, 2, 3]
    s.set_label("default", "stable", 0)
    s.set_label("default", "canary", 0)
    assert [m.version for m in s.delete("default", 1)] == [1]


def test_another_process_sees_labels_and_drops_deleted_versions_at_its_poll(
    tmp_path: Path,
) -> None:
    writer, reader = Store(tmp_path), Store(tmp_path)
    for i in range(3):
        _save(writer, seed=i)
    assert reader.load_new() == 3
    held = reader.resolve("default", 1)
    writer.set_label("default", "stable", 3)
    writer.delete("default", 1)
    assert _versions(reader) == [1, 2, 3]  # until its next poll
    assert reader.load_new() == 0
    assert _versions(reader) == [2, 3]
    assert reader.resolve("default", 0, label="stable").version == 3
    assert held.version == 1 and held.embedding.shape == (MOVIES, DIM)  # a call holding it
    writer.delete("default", 2)
    writer.set_label("default", "stable", 0)
    writer.delete("default", 0)
    reader.load_new()
    assert reader.list() == [] and reader.is_empty()


def test_a_label_written_by_another_process_blocks_a_delete_it_has_not_seen(
    tmp_path: Path,
) -> None:
    mine, theirs = Store(tmp_path), Store(tmp_path)
    _save(mine)
    _save(mine)
    theirs.load_new()
    theirs.set_label("default", "stable", 2)  # `mine` has not polled since
    with pytest.raises(errors.FailedPrecondition, match="labelled stable"):
        mine.delete("default", 2)
    assert _on_disk(tmp_path) == [1, 2]


def test_a_label_set_on_a_version_another_process_stored_serves_it_at_once(
    tmp_path: Path,
) -> None:
    # Replicas: one trains a version, the other moves a label to it before polling.
    mine, theirs = Store(tmp_path), Store(tmp_path)
    _save(mine)
    theirs.load_new()
    _save(mine)
    assert theirs.set_label("default", "stable", 2) == {"stable": 2}
    assert theirs.resolve("default", 0, label="stable").version == 2
    assert _versions(theirs) == [1, 2]


def test_a_poll_never_serves_a_label_before_the_version_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process stores a version and labels it just as this one's poll reads the
    # labels: the poll must serve that version along with the label that names it.
    mine, theirs = Store(tmp_path), Store(tmp_path)
    _save(theirs)
    theirs.set_label("default", "stable", 1)
    mine.load_new()
    real, done = store._read_labels, []

    def meanwhile(model_dir: Path) -> dict[str, int]:
        if not done:  # once, as this poll reads the labels: the next version, labelled
            done.append(True)
            _save(theirs)
            theirs.set_label("default", "stable", 2)
        return real(model_dir)

    monkeypatch.setattr(store, "_read_labels", meanwhile)
    mine.load_new()
    assert mine.resolve("default", 0, label="stable").version == 2
    assert _versions(mine) == [1, 2]


def test_keep_versions_keeps_the_newest_unlabelled_ones_after_each_commit(tmp_path: Path) -> None:
    s = Store(tmp_path, keep_versions=2)
    for i in range(3):
        _save(s, seed=i)
    assert _versions(s) == _on_disk(tmp_path) == [2, 3]
    s.set_label("default", "stable", 2)
    for i in range(3):
        _save(s, seed=i)
    assert _versions(s) == _on_disk(tmp_path) == [2, 5, 6]  # labelled 2 kept, not counted
    _save(s, "other")
    assert _versions(s, "other") == [1]


def test_keep_versions_prunes_what_another_process_stored(tmp_path: Path) -> None:
    writer = Store(tmp_path)
    for i in range(4):
        _save(writer, seed=i)
    keeper = Store(tmp_path, keep_versions=1)
    assert keeper.load_new() == 4
    assert _versions(keeper) == _on_disk(tmp_path) == [4]


def test_an_empty_store_says_why_until_a_version_is_loaded(tmp_path: Path) -> None:
    s = Store(tmp_path)
    with pytest.raises(errors.FailedPrecondition, match="train one first"):
        s.resolve("default", 0)
    s.not_ready = lambda: "the default model is being trained; ready in about 3 s"
    with pytest.raises(errors.FailedPrecondition, match="ready in about 3 s"):
        s.resolve("default", 0)
    _save(s)
    s.delete("default", 0)
    with pytest.raises(errors.FailedPrecondition, match="train one first"):
        s.resolve("default", 0)


# --- what each refusal, warning and log line says -----------------------------------------


def _invalid(call) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.InvalidArgument) as exc:
        call()
    return exc.value.field, exc.value.description


def test_refusals_name_their_field_and_bound(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s)
    bad = "must match [a-z0-9][a-z0-9_-]{0,63}, got 'Bad!'"
    assert _invalid(lambda: s.list("Bad!")) == ("name", bad)
    assert _invalid(lambda: s.delete("Bad!", 0)) == ("model.name", bad)
    assert _invalid(lambda: s.set_label("Bad!", "stable", 1)) == ("name", bad)
    assert _invalid(lambda: s.set_label("default", "Stable", 1)) == (
        "label",
        "must match [a-z][a-z0-9_-]{0,63}, got 'Stable'",
    )
    assert _invalid(lambda: s.set_label("default", "stable", -1)) == (
        "version",
        "must be >= 0 (0 = remove the label), got -1",
    )
    assert _invalid(lambda: s.resolve("default", -2, field="query")) == (
        "query.version",
        "must be >= 0 (0 = newest), got -2",
    )


def test_a_labelled_version_is_refused_saying_which_labels_hold_it(tmp_path: Path) -> None:
    s = _three_versions_with_version_1_labelled(tmp_path)
    s.set_label("default", "beta", 3)
    with pytest.raises(errors.FailedPrecondition) as refused:
        s.delete("default", 0)
    assert str(refused.value) == (
        "model 'default' version 1 is labelled canary, stable, version 3 is labelled beta: "
        "move or remove the label first (SetModelLabel; version 0 removes it)"
    )


def test_deleting_versions_of_one_model_leaves_the_others(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s, "default")
    _save(s, "other")
    _save(s, "other")
    _save(s, "other")
    assert [(m.name, m.version) for m in s.delete("other", 1)] == [("other", 1)]
    assert [(m.name, m.version) for m in s.delete("other", 0)] == [("other", 2), ("other", 3)]
    assert [(m.name, m.version) for m in s.list()] == [("default", 1)]
    assert _on_disk(tmp_path) == [1]


def test_a_store_that_never_polled_knows_its_own_versions_have_no_labels(tmp_path: Path) -> None:
    s = Store(tmp_path)
    served = _save(s)
    assert s.labels_of(served) == []
    with pytest.raises(errors.NotFound) as missing:
        s.resolve("default", 0, label="stable")
    assert str(missing.value) == "model 'default' has no label 'stable' (has [])"


def test_discarding_twice_is_fine(tmp_path: Path) -> None:
    s = Store(tmp_path)
    staged = s.stage("default", None, _weights(1), _meta(1))
    s.discard(staged)
    s.discard(staged)
    assert not staged.exists()


def test_a_version_keeps_its_catalogue(tmp_path: Path) -> None:
    s = Store(tmp_path)
    ids = np.arange(MOVIES, dtype=np.int64) * 7 + 3
    titles = np.array([f"Movie {i}" for i in range(MOVIES)])
    genres = np.array(["Drama|Comedy"] * MOVIES)
    staged = s.stage(
        "default", None, _weights(0), _meta(0), Catalogue(ids, titles, genres, np.arange(MOVIES))
    )
    s.commit("default", staged)
    fresh = Store(tmp_path)
    assert fresh.load_new() == 1
    catalogue = fresh.resolve("default", 0).catalogue
    assert not catalogue.is_identity
    np.testing.assert_array_equal(catalogue.movie_ids, ids)
    assert catalogue.titles == titles.tolist()
    assert catalogue.genre_list(4) == ["Drama", "Comedy"]
    np.testing.assert_array_equal(catalogue.num_likes, np.arange(MOVIES))


def test_only_model_names_are_loaded_and_the_dataset_store_is_skipped(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s, "default")
    _save(s, "zeta")
    # Whole versions under names a model cannot have, sorted before and between the models.
    for stray in ("AAA", "datasets", "dz Bad"):
        (tmp_path / stray).mkdir()
        shutil.copytree(tmp_path / "default" / "1", tmp_path / stray / "1")
    fresh = Store(tmp_path)
    assert fresh.load_new() == 2
    assert [(m.name, m.version) for m in fresh.list()] == [("default", 1), ("zeta", 1)]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_damaged_version_is_retried_after_1_then_2_seconds_and_holds_up_no_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The wait doubles from one second, up to five minutes."""
    writer = Store(tmp_path)
    _save(writer)
    damaged = _damaged(tmp_path, 2)
    _save(writer)  # 3, after the damaged one
    reader = Store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="movie_embeddings_server.store.loaded"):
        first = time.monotonic()
        assert reader.load_new() == 2
        assert reader.load_new() == 0
        _save(writer)  # 4, while 2 waits for its retry
        assert reader.load_new() == 1
        wait_until(lambda: reader.load_new() or len(_warnings(caplog)) > 1, 10, "a retry")
    assert time.monotonic() - first >= 1.0
    assert _versions(reader) == [1, 3, 4]
    why = "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    assert _warnings(caplog)[:2] == [  # a slow machine may have reached attempt 3 since
        f"skipping damaged model version {damaged} (attempt 1, next in 1 s): {why}",
        f"skipping damaged model version {damaged} (attempt 2, next in 2 s): {why}",
    ]
    reader._failed[damaged] = (20, 0.0)  # failed 20 times: 2^20 s would be twelve days
    with caplog.at_level(logging.WARNING, logger="movie_embeddings_server.store.loaded"):
        reader.load_new()
    assert _warnings(caplog)[-1] == (
        f"skipping damaged model version {damaged} (attempt 21, next in 300 s): {why}"
    )
    assert 299 < reader._failed[damaged][1] - time.monotonic() <= 300


def test_damaged_labels_are_skipped_with_a_warning_and_the_last_ones_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Store(tmp_path)
    _save(s)
    s.set_label("default", "stable", 1)
    (tmp_path / "default" / store.LABELS).write_text("[1, 2")
    with caplog.at_level(logging.WARNING, logger="movie_embeddings_server.store.models"):
        s.load_new()
    assert s.resolve("default", 0, label="stable").version == 1
    assert _warnings(caplog) == [
        "skipping damaged labels of model default: Expecting ',' delimiter: line 1 column 6 "
        "(char 5)"
    ]


def test_dropping_and_pruning_versions_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer, reader = Store(tmp_path), Store(tmp_path, keep_versions=2)
    _save(writer)
    reader.load_new()
    writer.delete("default", 1)
    with caplog.at_level(logging.INFO, logger="movie_embeddings_server.store.models"):
        reader.load_new()
        for i in range(3):
            _save(reader, seed=i)
    assert [r.getMessage() for r in caplog.records] == [
        "stopped serving default v1: deleted from the store",
        "removed default v2: older than the newest 2",
    ]


def test_pruning_removes_versions_of_other_processes_it_has_not_loaded(tmp_path: Path) -> None:
    keeper, writer = Store(tmp_path, keep_versions=1), Store(tmp_path)
    _save(keeper)
    _save(writer)
    _save(writer)  # 2 and 3: the keeper has not polled since
    _save(keeper)
    assert _versions(keeper) == _on_disk(tmp_path) == [4]


# A test holding a model's lock plays another process changing the store while this one waits
# for that lock. Linux lists a lock's waiters in /proc/locks ("->"): the wait is observed.


def _waits_for(lock: Path) -> bool:
    inode = f":{lock.stat().st_ino} "
    return any(
        "->" in line and inode in line for line in Path("/proc/locks").read_text().split("\n")
    )


def _in_thread(call) -> tuple[threading.Thread, dict]:  # type: ignore[no-untyped-def]
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _while_it_waits(model_dir: Path, call, change) -> dict:  # type: ignore[no-untyped-def]
    """Run `call` in a thread, and `change` once it waits for the model's lock; its outcome."""
    lock = model_dir / versions.LOCK_FILE
    with versions.locked(model_dir):
        thread, outcome = _in_thread(call)
        wait_until(lambda: _waits_for(lock), 10, "the call waiting for the lock")
        change()
    thread.join(30)
    assert not thread.is_alive()
    return outcome


def _label(model_dir: Path, label: str, version: int) -> None:
    versions.replace_file(model_dir / store.LABELS, json.dumps({label: version}).encode())


def test_a_label_set_while_a_delete_waits_for_the_lock_saves_the_version(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _save(s)
    _save(s)
    model_dir = tmp_path / "default"
    outcome = _while_it_waits(
        model_dir, lambda: s.delete("default", 2), lambda: _label(model_dir, "stable", 2)
    )
    assert isinstance(outcome["error"], errors.FailedPrecondition)
    assert _on_disk(tmp_path) == [1, 2]


def test_a_label_set_while_pruning_waits_saves_that_version_only(tmp_path: Path) -> None:
    writer = Store(tmp_path)
    for i in range(4):
        _save(writer, seed=i)
    keeper = Store(tmp_path, keep_versions=1)
    model_dir = tmp_path / "default"
    outcome = _while_it_waits(model_dir, keeper.load_new, lambda: _label(model_dir, "old", 1))
    assert outcome["result"] == 4
    assert _on_disk(tmp_path) == [1, 4]


def test_versions_another_process_deletes_while_a_delete_waits(tmp_path: Path) -> None:
    s = Store(tmp_path)
    for i in range(3):
        _save(s, seed=i)
    model_dir = tmp_path / "default"

    def retire(version: int) -> None:
        (model_dir / str(version)).rename(model_dir / f"{versions.DELETED_PREFIX}{version}")

    outcome = _while_it_waits(model_dir, lambda: s.delete("default", 0), lambda: retire(1))
    assert [m.version for m in outcome["result"]] == [2, 3]  # it went on past the gone one
    _save(s)
    outcome = _while_it_waits(model_dir, lambda: s.delete("default", 4), lambda: retire(4))
    assert str(outcome["error"]) == "model 'default' version 4 was deleted already"


def test_a_remembered_resolution_waits_for_no_lock(tmp_path: Path) -> None:
    """A repeated ModelRef is answered without the store's lock, which a poll or a commit may
    hold for a while."""
    s = Store(tmp_path)
    _save(s)
    first = s.resolve("default", 0)
    found: list[object] = []
    with s._lock:
        asker = threading.Thread(target=lambda: found.append(s.resolve("default", 0)))
        asker.start()
        asker.join(5)
        answered = not asker.is_alive()
    asker.join(5)
    assert answered and found == [first]
