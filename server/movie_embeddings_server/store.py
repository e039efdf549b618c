"""Model versions on disk (<data-dir>/<name>/<version>/) and the loaded ones in memory."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .catalogue import FILE as CATALOGUE_FILE
from .catalogue import Catalogue
from .config import DEFAULT_MODEL
from .errors import FailedPrecondition, InvalidArgument, NotFound
from .inference import WEIGHT_NAMES, ServedModel
from .versions import (
    DATASETS_DIR,
    NAME_RE,
    check_store_name,
    commit,
    fsync_dir,
    fsync_file,
    staging_dir,
    version_numbers,
    write_file,
    write_npz,
)

log = logging.getLogger(__name__)

METADATA = "metadata.json"
WEIGHTS = "weights.npz"
KERAS_MODEL = "model.keras"


def check_name(field: str, name: str) -> str:
    """The model name to use: empty means "default"; nothing that could leave the data dir."""
    name = check_store_name(field, name or DEFAULT_MODEL)
    if name == DATASETS_DIR:
        raise InvalidArgument(field, f"{DATASETS_DIR!r} is reserved for the dataset store")
    return name


class Store:
    """Reads and writes versions; a version becomes visible only by an atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._models: dict[str, dict[int, ServedModel]] = {}
        self._failed: dict[Path, tuple[int, float]] = {}  # attempts, when to try again

    def load_new(self) -> int:
        """Load every complete version not loaded yet (another process may have written it),
        and return how many. A damaged one is skipped with a warning and retried later, after
        1, 2, 4, ... up to 300 seconds; it never disturbs what is served."""
        count = 0
        for model_dir in sorted(self.root.iterdir()):
            if not (model_dir.is_dir() and NAME_RE.fullmatch(model_dir.name)):
                continue
            if model_dir.name == DATASETS_DIR:
                continue
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
        return served

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def is_empty(self) -> bool:
        with self._lock:
            return not self._models

    def resolve(self, name: str, version: int, field: str = "model") -> ServedModel:
        """The version asked for; version 0 is the newest."""
        name = check_name(f"{field}.name", name)
        if version < 0:
            raise InvalidArgument(f"{field}.version", f"must be >= 0 (0 = newest), got {version}")
        with self._lock:
            if not self._models:
                raise FailedPrecondition("no model is ready yet; train one first")
            versions = self._models.get(name)
            if not versions:
                raise NotFound(f"model {name!r} not found")
            if version == 0:
                return versions[max(versions)]
            if version not in versions:
                raise NotFound(f"model {name!r} has no version {version} (has {sorted(versions)})")
            return versions[version]

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
