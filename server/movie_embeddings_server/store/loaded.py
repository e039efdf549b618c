"""The model versions a process serves: read from disk, found by name, version or label."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import DEFAULT_MODEL
from ..errors import FailedPrecondition, InvalidArgument, NotFound, quoted
from ..model.catalogue import Catalogue
from ..model.inference import WEIGHT_NAMES, ServedModel
from .versions import DATASETS_DIR, check_store_name, version_numbers

log = logging.getLogger(__name__)

METADATA = "metadata.json"
WEIGHTS = "weights.npz"
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
        raise InvalidArgument(field, f"must match {LABEL_PATTERN}, got {quoted(label)}")
    return label


def read_version(path: Path, name: str, version: int) -> ServedModel:
    """Version `version` of model `name`, stored in `path` (a store's NAME/VERSION, or a
    version still staged)."""
    meta = json.loads((path / METADATA).read_text())
    # An open file, not a path: np.load leaks its own handle on a damaged archive.
    with open(path / WEIGHTS, "rb") as f, np.load(f) as npz:
        weights = {k: npz[k] for k in WEIGHT_NAMES}
    catalogue = Catalogue.load(path, len(weights["embedding"]))
    served = ServedModel(name, version, weights, meta, catalogue)
    served.directory = path
    return served


class LoadedVersions:
    """The versions read into memory under `root`, by model and version, and each model's
    labels as last read; `resolve` finds the one a query asks for. `Store` (models.py) keeps
    them in step with the disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
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

    def _load_versions(self, model_dir: Path) -> int:
        """`Store.load_new` for one model: its versions not loaded yet, and how many; a damaged
        one is left to its next retry."""
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

    def _read(self, name: str, version: int) -> ServedModel:
        return read_version(self.root / name / str(version), name, version)

    def _register(self, served: ServedModel) -> None:
        with self._lock:
            self._models.setdefault(served.name, {})[served.version] = served
            self._resolved = {}
            self.not_ready = lambda: NOT_READY

    def _set_labels(self, name: str, labels: dict[str, int]) -> None:
        """A model's labels as stored now."""
        with self._lock:
            if self._labels.get(name) != labels:
                self._labels[name] = labels
                self._resolved = {}

    def _forget(self, name: str, version: int) -> None:
        with self._lock:
            versions = self._models.get(name, {})
            versions.pop(version, None)
            if not versions:
                self._models.pop(name, None)
                self._labels.pop(name, None)
            self._resolved = {}

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
