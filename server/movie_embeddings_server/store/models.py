"""Model versions on disk (<data-dir>/<name>/<version>/): written, labelled, deleted, polled."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..model.catalogue import FILE as CATALOGUE_FILE
from ..model.catalogue import Catalogue
from ..model.inference import ServedModel
from .loaded import METADATA, WEIGHTS, LoadedVersions, check_label, check_name
from .versions import (
    DATASETS_DIR,
    NAME_RE,
    commit,
    fsync_dir,
    fsync_file,
    locked,
    naming,
    replace_file,
    retire,
    staging_dir,
    storing,
    version_numbers,
    write_file,
    write_npz,
)

log = logging.getLogger(__name__)

KERAS_MODEL = "model.keras"
LABELS = "labels.json"  # <name>/labels.json: {label: version}, replaced whole under the lock


def _read_labels(model_dir: Path) -> dict[str, int]:
    """A model's labels as stored; none when it has no labels file."""
    try:
        labels = json.loads((model_dir / LABELS).read_text())
    except FileNotFoundError:
        return {}
    return {str(label): int(version) for label, version in labels.items()}


class Store(LoadedVersions):
    """Reads and writes versions; a version becomes visible only by an atomic rename, and
    disappears by one (`delete`). With `keep_versions`, each model keeps its newest
    `keep_versions` unlabelled versions and loses older ones as new ones come. `load_new`
    keeps the loaded versions (LoadedVersions) in step with the disk."""

    def __init__(self, root: Path, keep_versions: int | None = None) -> None:
        super().__init__(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_versions = keep_versions

    def load_new(self) -> int:
        """Load every complete version not loaded yet (another process may have written it),
        and return how many; read every model's labels; forget the versions deleted from
        disk (calls running on one finish on it). A damaged version is skipped with a
        warning and retried later, after 1, 2, 4, ... up to 300 seconds; it never disturbs
        what is served."""
        count = 0
        for model_dir in sorted(self.root.iterdir()):
            if not (model_dir.is_dir() and NAME_RE.fullmatch(model_dir.name)):
                continue
            if model_dir.name == DATASETS_DIR:
                continue
            # The labels first: a label names a version stored before it was set, so every
            # version they name is loaded below, before they are served.
            labels = self._poll_labels(model_dir)
            loaded = self._load_versions(model_dir)
            if labels is not None:
                self._set_labels(model_dir.name, labels)
            if loaded and self.keep_versions:
                self.prune(model_dir.name)
            count += loaded
        self._forget_deleted()
        return count

    def _poll_labels(self, model_dir: Path) -> dict[str, int] | None:
        """A model's labels as stored, or None if its labels file is damaged."""
        try:
            return _read_labels(model_dir)
        # Only a hand edit damages it (it is replaced whole): the labels read last stay.
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("skipping damaged labels of model %s: %s", model_dir.name, exc)
            return None

    def _forget_deleted(self) -> None:
        """Stop serving the versions whose directories are gone (deleted by another process)."""
        with self._lock:
            gone = [
                (name, version)
                for name, versions in self._models.items()
                for version in versions
                if not (self.root / name / str(version)).is_dir()
            ]
        for name, version in gone:
            self._forget(name, version)
            log.info("stopped serving %s v%d: deleted from the store", name, version)

    def stage(
        self,
        name: str,
        keras_model: Any,
        weights: dict[str, np.ndarray],
        meta: dict,
        catalogue: Catalogue | None = None,
    ) -> Path:
        """Write a complete version into a hidden staging directory (not yet a version),
        removed if a write fails (the trainer process tells a full disk by `storing`)."""
        tmp = staging_dir(self.root / name)
        try:
            if keras_model is not None:
                with naming(tmp / KERAS_MODEL):
                    keras_model.save(tmp / KERAS_MODEL)
            if catalogue is not None:  # none: the identity of a synthetic model's movies
                with naming(tmp / CATALOGUE_FILE):
                    catalogue.save(tmp)
                fsync_file(tmp / CATALOGUE_FILE)
            write_npz(tmp / WEIGHTS, weights)
            write_file(tmp / METADATA, json.dumps(meta, indent=2, sort_keys=True).encode())
            fsync_dir(tmp)
        except BaseException:
            self.discard(tmp)
            raise
        return tmp

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[bool]:
        """Try to hold `<root>/.<what>.lock` for the block: True if this process holds it,
        False if another one does. The kernel releases it if its holder dies."""
        with open(self.root / f".{what}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True

    def commit(self, name: str, staged: Path) -> ServedModel:
        """Rename a staged directory to the next version number (under the lock that holds
        across processes sharing the store) and serve it."""
        with self._lock, storing(f"a new version of model {name!r}"):
            version = commit(self.root / name, staged)
        served = self._read(name, version)
        self._register(served)
        if self.keep_versions:
            self.prune(name)
        return served

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def set_label(self, name: str, label: str, version: int) -> dict[str, int]:
        """Point `label` at a stored version of `name` (0: remove it), for every process
        sharing the store; the model's labels after the change."""
        name = check_name("name", name)
        check_label("label", label)
        if version < 0:
            raise InvalidArgument("version", f"must be >= 0 (0 = remove the label), got {version}")
        model_dir = self.root / name
        if not model_dir.is_dir():
            raise NotFound(f"model {name!r} not found")
        with locked(model_dir):  # against a delete, or another label change, by any process
            labels = _read_labels(model_dir)
            if version:
                if not (model_dir / str(version)).is_dir():
                    raise NotFound(
                        f"model {name!r} has no version {version} "
                        f"(has {version_numbers(model_dir)})"
                    )
                labels[label] = version
            else:
                labels.pop(label, None)
            with storing(f"the labels of model {name!r}", "they are as they were"):
                replace_file(model_dir / LABELS, json.dumps(labels, sort_keys=True).encode())
        if version:  # stored by another process since this one last polled: load it first
            self._load_versions(model_dir)
        self._set_labels(name, labels)
        return dict(labels)

    def delete(self, name: str, version: int, label: str = "") -> list[ServedModel]:
        """Delete one version (or the one `label` names), or every version of `name` (version
        0, no label), from disk and from memory; the versions deleted. A labelled version is
        refused. Calls running on a deleted version finish on it."""
        if version or label:
            doomed = [self.resolve(name, version, label=label)]
        else:
            name = check_name("model.name", name)
            doomed = self.list(name)
            if not doomed:
                raise NotFound(f"model {name!r} not found")
        model_dir = self.root / doomed[0].name
        numbers = [served.version for served in doomed]
        self._refuse_labelled(model_dir, numbers)  # every version refused before any goes
        deleted = []
        for served in doomed:
            what = f"the deletion of model {served.name!r} v{served.version}"
            try:
                with storing(what, "the version stays"):
                    retire(
                        model_dir,
                        served.version,
                        partial(self._refuse_labelled, model_dir, [served.version]),
                    )
            except FileNotFoundError:
                continue  # another process deleted it just now
            self._forget(served.name, served.version)
            deleted.append(served)
        if not deleted:
            raise NotFound(f"model {doomed[0].name!r} version {version} was deleted already")
        return deleted

    def _refuse_labelled(self, model_dir: Path, versions: list[int]) -> None:
        """FAILED_PRECONDITION when a label (as stored now) names one of `versions`."""
        named: dict[int, list[str]] = {}
        for label, version in sorted(_read_labels(model_dir).items()):
            named.setdefault(version, []).append(label)
        if held := [
            f"version {v} is labelled {', '.join(named[v])}" for v in versions if v in named
        ]:
            raise FailedPrecondition(
                f"model {model_dir.name!r} {', '.join(held)}: move or remove the label first "
                "(SetModelLabel; version 0 removes it)"
            )

    def prune(self, name: str) -> None:
        """Delete the versions of `name` older than its newest `keep_versions` unlabelled ones
        (labelled versions are kept and not counted)."""
        assert self.keep_versions
        model_dir = self.root / name
        labelled = set(_read_labels(model_dir).values())
        unlabelled = [v for v in version_numbers(model_dir) if v not in labelled]
        for version in unlabelled[: -self.keep_versions]:
            try:
                retire(model_dir, version, partial(self._refuse_labelled, model_dir, [version]))
            except (FileNotFoundError, FailedPrecondition):
                continue  # deleted, or labelled, by another process just now
            self._forget(name, version)
            log.info("removed %s v%d: older than the newest %d", name, version, self.keep_versions)


def new_metadata(**fields: Any) -> dict[str, Any]:
    """A version's metadata: the given fields plus its creation time (UTC, ISO 8601)."""
    return {"create_time": datetime.now(UTC).isoformat(), **fields}
