"""A full disk loses nothing: a real server (and its trainer process) under a file size limit,
whose writes past it fail EFBIG as on a full disk. A Train, an import and a label change that
do not fit end RESOURCE_EXHAUSTED naming the file, with every earlier version, dataset and
label intact and nothing half-made left; deletes still work; the server keeps answering; and
once the limit is gone the same requests succeed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ServerProcess, copy_store, start_server

import movie_embeddings as me

# Above the small versions and datasets written here (~72 KB and ~18 KB files) and the log,
# below the big ones (a 1,500-movie model.keras ~720 KB, 200,000 ratings' dataset.npz ~1.8 MB).
LIMIT = 256 * 1024
SMALL_TRAIN: dict[str, Any] = {"num_watchers": 100, "epochs": 1, "seed": 1}
BIG_TRAIN: dict[str, Any] = {"num_watchers": 200, "num_movies": 1500, "epochs": 1, "seed": 1}
# Labels of the longest name: labels.json outgrows this limit after ~55 of them.
LABELS_LIMIT = 4096
LONG_LABEL = "l" * 60


def _ratings(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {
        "watcher_id": rng.integers(0, max(n // 20, 1), n),
        "movie_id": rng.integers(0, 500, n),
        "rating": (rng.random(n) * 5).astype(np.float32),
    }


def _stored(client: me.Client) -> tuple[list[tuple[str, int, tuple[str, ...]]], list[Any]]:
    """Every model version (with its labels) and dataset version; each one answers."""
    models = client.list_models()
    for info in models:
        assert client.movie_vector(1, model=info.ref).shape == (info.embedding_dim,)
    datasets = client.list_datasets()
    for dataset in datasets:
        assert client.get_dataset(dataset.ref) == dataset
    return [(m.name, m.version, m.labels) for m in models], [d.ref for d in datasets]


def _half_made(data: Path) -> list[Path]:
    """Staging directories and staged labels files: what a failed write might leave."""
    return [p for p in data.rglob(".*") if p.name.startswith((".tmp-", ".labels.json."))]


def _refused(server: ServerProcess, call: Any, *words: str) -> str:
    with pytest.raises(me.ResourceExhausted) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert "File too large" in message and "Traceback" not in message
    assert not _half_made(server.data_dir)
    return message


def test_a_full_disk_loses_nothing(server: ServerProcess, tmp_path: Path) -> None:
    data = copy_store(server, tmp_path / "data")
    limited = start_server(data, tmp_path / "limited.log", file_size_limit=LIMIT)
    try:
        with me.Client(limited.target) as client:
            for _ in range(2):  # the earlier versions: they fit
                list(client.train("small", **SMALL_TRAIN))
                client.import_dataset("few", _ratings(1000))
            client.delete_model("small", 1)  # a delete writes no file: it still works
            client.delete_dataset("few", 1)
            before = _stored(client)
            assert ("small", 2, ()) in before[0] and me.DatasetRef("few", 2) in before[1]

            train = _refused(
                limited,
                lambda: list(client.train("big", **BIG_TRAIN)),
                "no space to write a new version of model 'big' (model.keras)",
                "nothing was stored",
            )
            assert _stored(client) == before
            imported = _refused(
                limited,
                lambda: client.import_dataset("many", _ratings(200_000)),
                "no space to write a new version of dataset 'many' (dataset.npz)",
                "nothing was stored",
            )
            assert _stored(client) == before
            list(client.train("small", **SMALL_TRAIN))  # the server and trainer go on
            after = _stored(client)
            assert after[0] == [*before[0], ("small", 3, ())]
    finally:
        assert limited.stop() == 0
    print(f"\n{train}\n{imported}")

    labels = start_server(data, tmp_path / "labels.log", file_size_limit=LABELS_LIMIT)
    try:
        with me.Client(labels.target) as client:
            kept: dict[str, int] = {}
            for i in range(200):  # bounded: the limit is reached after ~55
                label = f"{LONG_LABEL}{i:03d}"
                try:
                    kept = client.set_model_label("small", label, 2)
                except me.ResourceExhausted:
                    break
            else:
                pytest.fail("200 labels fitted in labels.json")
            assert len(kept) > 10
            labelled = _stored(client)
            small = ("small", 2, tuple(sorted(kept)))
            assert labelled == ([small if m[:2] == small[:2] else m for m in after[0]], after[1])
            refused_label = _refused(
                labels,
                lambda: client.set_model_label("small", label, 2),
                "no space to write the labels of model 'small' (labels.json)",
                "they are as they were",
            )
            assert _stored(client) == labelled
    finally:
        assert labels.stop() == 0
    print(refused_label)

    unlimited = start_server(data, tmp_path / "unlimited.log")
    try:
        with me.Client(unlimited.target) as client:
            assert _stored(client) == labelled
            assert client.set_model_label("small", label, 2) == {**kept, label: 2}
            info = [e for e in client.train("big", **BIG_TRAIN) if isinstance(e, me.ModelInfo)]
            assert info[0].ref == me.ModelRef("big", 1) and info[0].num_movies == 1500
            assert client.import_dataset("many", _ratings(200_000)).ref == me.DatasetRef("many", 1)
            assert not _half_made(data)
    finally:
        assert unlimited.stop() == 0
