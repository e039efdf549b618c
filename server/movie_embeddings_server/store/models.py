"""Model versions on disk (<data-dir>/<name>/<version>/) and the loaded ones in memory."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_MODEL
from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..model.catalogue import FILE as CATALOGUE_FILE
from ..model.catalogue import Catalogue
from ..model.inference import WEIGHT_NAMES, ServedModel
from .versions import (
    DATASETS_DIR,
    NAME_RE,
    check_store_name,
    commit,
    fsync_dir,
    fsync_file,
    locked,
    replace_file,
    retire,
    staging_dir,
    version_numbers,
    write_file,
    write_npz,
)

log = logging.getLogger(__name__)

METADATA = "metadata.json"
WEIGHTS = "weights.npz"
KERAS_MODEL = "model.keras"
LABELS = "labels.json"  # <name>/labels.json: {label: version}, replaced whole under the lock
LABEL_PATTERN = r"[a-z][a-z0-9_-]{0,63}"  # a letter first: never read as a version number
LABEL_RE = re.compile(LABEL_PATTERN)
NOT_READY = "no model is ready yet; train one first"


def check_name(field: str, name: str) -> str:
    """The model name to use: empty means "default"; nothing that could leave the data dir."""
    name = check_store_name(field, name or DEFAULT_MODEL)
    if name == DATASETS_DIR:
        raise InvalidArgument(field, f"{DATASETS_DIR!r} is reserved for the dataset store")
    return name


def check_label(field: str, label: str) -> str:
    if not LABEL_RE.fullmatch(label):
        raise InvalidArgument(field, f"must match {LABEL_PATTERN}, got {label!r}")
    return label


def _read_labels(model_dir: Path) -> dict[str, int]:
    """A model's labels as stored; none when it has no labels file."""
    try:
        labels = json.loads((model_dir / LABELS).read_text())
    except FileNotFoundError:
        return {}
    return {str(label): int(version) for label, version in labels.items()}


class Store:
    """Reads and writes versions; a version becomes visible only by an atomic rename, and
    disappears by one (`delete`). With `keep_versions`, each model keeps its newest
    `keep_versions` unlabelled versions and loses older ones as new ones come."""

    def __init__(self, root: Path, keep_versions: int | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_versions = keep_versions
        # What a query of an empty store is told while its first model is on its way (the
        # default model's training at start); back to NOT_READY once a version is loaded.
        self.not_ready: Callable[[], str] = lambda: NOT_READY
        self._lock = threading.Lock()
        self._models: dict[str, dict[int, ServedModel]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        # What `resolve` answered, by its arguments: a query's lookup without the checks or
        # the lock. Replaced (under the lock) whenever a version or a label changes.
        self._resolved: dict[tuple[str, int, str], ServedModel] = {}
        self._failed: dict[Path, tuple[int, float]] = {}  # attempts, when to try again

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
            loaded = self._load_versions(model_dir)
            self._load_labels(model_dir)
            if loaded and self.keep_versions:
                self.prune(model_dir.name)
            count += loaded
        self._forget_deleted()
        return count

    def _load_versions(self, model_dir: Path) -> int:
        count = 0
        for version in version_numbers(model_dir):
            name, version_dir = model_dir.name, model_dir / str(version)
            with self._lock:
                if version in self._models.get(name, {}):
                    continue
            attempts, retry_at = self._failed.get(version_dir, (0, 0.0))
            if time.monotonic() < retry_at:
                continue
            try:
                served = self._read(name, version)
            except Exception as exc:  # any damage: keep serving the rest
                wait = min(2.0**attempts, 300.0)
                self._failed[version_dir] = (attempts + 1, time.monotonic() + wait)
                log.warning(
                    "skipping damaged model version %s (attempt %d, next in %.0f s): %s",
                    version_dir,
                    attempts + 1,
                    wait,
                    exc,
                )
                continue
            self._failed.pop(version_dir, None)
            self._register(served)
            count += 1
        return count

    def _load_labels(self, model_dir: Path) -> None:
        try:
            labels = _read_labels(model_dir)
        # Only a hand edit damages it (it is replaced whole): the labels read last stay.
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("skipping damaged labels of model %s: %s", model_dir.name, exc)
            return
        with self._lock:
            if self._labels.get(model_dir.name) != labels:
                self._labels[model_dir.name] = labels
                self._resolved = {}

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

    def _forget(self, name: str, version: int) -> None:
        with self._lock:
            versions = self._models.get(name, {})
            versions.pop(version, None)
            if not versions:
                self._models.pop(name, None)
                self._labels.pop(name, None)
            self._resolved = {}

    def _read(self, name: str, version: int) -> ServedModel:
        path = self.root / name / str(version)
        meta = json.loads((path / METADATA).read_text())
        # An open file, not a path: np.load leaks its own handle on a damaged archive.
        with open(path / WEIGHTS, "rb") as f, np.load(f) as npz:
            weights = {k: npz[k] for k in WEIGHT_NAMES}
        catalogue = Catalogue.load(path, len(weights["embedding"]))
        return ServedModel(name, version, weights, meta, catalogue)

    def _register(self, served: ServedModel) -> None:
        with self._lock:
            self._models.setdefault(served.name, {})[served.version] = served
            self._resolved = {}
            self.not_ready = lambda: NOT_READY

    def stage(
        self,
        name: str,
        keras_model: Any,
        weights: dict[str, np.ndarray],
        meta: dict,
        catalogue: Catalogue | None = None,
    ) -> Path:
        """Write a complete version into a hidden staging directory (not yet a version)."""
        tmp = staging_dir(self.root / name)
        if keras_model is not None:
            keras_model.save(tmp / KERAS_MODEL)
        if catalogue is not None:  # none: the identity of a synthetic model's movies
            catalogue.save(tmp)
            fsync_file(tmp / CATALOGUE_FILE)
        write_npz(tmp / WEIGHTS, weights)
        write_file(tmp / METADATA, json.dumps(meta, indent=2, sort_keys=True).encode())
        fsync_dir(tmp)
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
        with self._lock:
            version = commit(self.root / name, staged)
        served = self._read(name, version)
        self._register(served)
        if self.keep_versions:
            self.prune(name)
        return served

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def is_empty(self) -> bool:
        with self._lock:
            return not self._models

    def resolve(
        self, name: str, version: int, field: str = "model", label: str = ""
    ) -> ServedModel:
        """The version asked for: the one `label` names, else `version`, 0 the newest."""
        asked = (name, version, label)
        if (served := self._resolved.get(asked)) is not None:
            return served
        name = check_name(f"{field}.name", name)
        if version < 0:
            raise InvalidArgument(f"{field}.version", f"must be >= 0 (0 = newest), got {version}")
        if label:
            check_label(f"{field}.label", label)
        with self._lock:
            served = self._version(name, version, field, label)
            self._resolved[asked] = served
        return served

    def _version(self, name: str, version: int, field: str, label: str) -> ServedModel:
        """`resolve`'s lookup, under the lock."""
        if not self._models:
            raise FailedPrecondition(self.not_ready())
        versions = self._models.get(name)
        if not versions:
            raise NotFound(f"model {name!r} not found")
        if label:
            labels = self._labels.get(name, {})
            if label not in labels:
                raise NotFound(f"model {name!r} has no label {label!r} (has {sorted(labels)})")
            if version not in (0, labels[label]):
                raise InvalidArgument(
                    f"{field}.label",
                    f"{label!r} names version {labels[label]} of model {name!r}, not "
                    f"version {version}: give the label or the version",
                )
            version = labels[label]
        if version == 0:
            return versions[max(versions)]
        if version not in versions:
            raise NotFound(f"model {name!r} has no version {version} (has {sorted(versions)})")
        return versions[version]

    def labels_of(self, served: ServedModel) -> list[str]:
        """The labels that name a version, sorted."""
        with self._lock:
            labels = self._labels.get(served.name, {})
        return sorted(label for label, version in labels.items() if version == served.version)

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
            replace_file(model_dir / LABELS, json.dumps(labels, sort_keys=True).encode())
        with self._lock:
            self._labels[name] = labels
            self._resolved = {}
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
            try:
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

    def list(self, name: str = "") -> list[ServedModel]:
        """Loaded versions sorted by name then version, of one model or all."""
        if name:
            check_name("name", name)
        with self._lock:
            return [
                v
                for n in sorted(self._models)
                if not name or n == name
                for _, v in sorted(self._models[n].items())
            ]


def new_metadata(**fields: Any) -> dict[str, Any]:
    """A version's metadata: the given fields plus its creation time (UTC, ISO 8601)."""
    return {"create_time": datetime.now(UTC).isoformat(), **fields}
