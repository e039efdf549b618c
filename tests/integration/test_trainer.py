"""The trainer processes behind Train, driven directly (no gRPC): reuse, recycling, close."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from movie_embeddings_server import config
from movie_embeddings_server.model.inference import ServedModel
from movie_embeddings_server.serving import trainer
from movie_embeddings_server.store.models import Store

SMALL = config.resolve_synthetic({"num_watchers": 100, "seed": 1})
ONE_EPOCH = config.resolve_training({"epochs": 1})


def test_a_trainer_process_is_reused_then_replaced_after_recycle_after_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer, "RECYCLE_AFTER", 2)
    t = trainer.Trainer(Store(tmp_path))
    try:
        pids = []
        for _ in range(3):
            job = t.start("m", SMALL, ONE_EPOCH, wait=True)
            pids.append(job.pid)
            *epochs, served = list(job)
            assert len(epochs) == 1 and isinstance(served, ServedModel)
        assert pids[0] == pids[1] != pids[2]
        assert [v.version for v in t.store.list("m")] == [1, 2, 3]
    finally:
        t.close()


def test_close_cancels_a_running_training_and_refuses_new_ones(tmp_path: Path) -> None:
    t = trainer.Trainer(Store(tmp_path))
    job = t.start("big", config.resolve_synthetic({"num_watchers": 20_000, "seed": 1}), ONE_EPOCH)
    events = iter(job)
    t.close()
    with pytest.raises(trainer.Cancelled):
        list(events)
    with pytest.raises(trainer.Cancelled, match="shutting down"):
        t.start("m", SMALL, ONE_EPOCH)
    assert not (tmp_path / "big").exists() or [p.name for p in (tmp_path / "big").iterdir()] == []


def test_a_finished_job_leaves_no_traced_graph_behind(tmp_path: Path) -> None:
    # A Keras fit leaves a `CustomGradient-N` in TensorFlow's global gradient registry whose
    # closure holds the traced train step (tensorflow#97697): ~5 MiB a job in a trainer
    # process, until the worker's end_job drops the job's entries.
    from tensorflow.python.framework.func_graph import FuncGraph

    from movie_embeddings_server.training import keras_model, worker
    from movie_embeddings_server.training.quiet_start import import_keras

    keras = import_keras()
    store = Store(tmp_path)

    def job(seed: int) -> None:
        registered = set(worker._gradient_registry())
        synthetic = config.resolve_synthetic({"num_watchers": 100, "seed": seed})
        worker.run(store, "m", synthetic, ONE_EPOCH, lambda _: None, keras_model.StopSignal())
        worker.end_job(keras, registered)

    def graphs() -> int:
        gc.collect()
        return sum(isinstance(o, FuncGraph) for o in gc.get_objects())

    job(1)
    registered, traced = set(worker._gradient_registry()), graphs()
    for seed in (2, 3):
        job(seed)
    assert set(worker._gradient_registry()) == registered
    assert graphs() == traced
