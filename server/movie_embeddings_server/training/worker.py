"""The trainer process: TensorFlow lives here, never in the serving process.

The server starts it with `python -m movie_embeddings_server.training.worker DATA_DIR` and
talks to it in JSON lines. In on stdin: `{"id": N, "train": {...}}` and `{"stop": N}`. Out on
stdout, for job N: `{"id": N, "epoch": {...}}` per epoch (and inside long ones), then one of
`{"id": N, "staged": PATH}` (a complete version in a staging directory, for the server to
commit), `{"id": N, "cancelled": MESSAGE}`, `{"id": N, "refused": {"error": NAME, "args": [...]}}`
(a domain error: the request does not fit the data) or `{"id": N, "error": MESSAGE}`. A job
trains on synthetic data or on a stored dataset. Jobs run one at a time. The end of stdin (the
server exited, even by kill -9) stops the job in progress, and the process exits without
staging it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from .. import errors
from ..config import (
    DatasetTrainingSpec,
    SyntheticSpec,
    TrainSpec,
    for_data,
    local_training,
    resolve_dataset_training,
    train_rows,
    wire_training,
)
from ..errors import Cancelled
from ..jobs import Epoch, refusal
from ..model import known_watchers
from ..model.catalogue import Catalogue
from ..model.inference import ServedModel
from ..store.datasets import DatasetStore
from ..store.models import Store, new_metadata
from ..store.versions import fsync_dir, storing, write_npz
from . import keras_model as training
from . import quality, ranking, rows, sampled
from .calibration import HELDOUT  # a dataset version's held-out watchers, to measure it later
from .quiet_start import import_keras
from .synthetic import generate

log = logging.getLogger(__name__)

# Below the serving process in the CPU scheduler's eyes: on a busy machine queries come first.
NICENESS = 10


def _fit_metadata(
    trained: training.Trained, spec: TrainSpec, metrics: dict[str, float] | None = None
) -> dict[str, Any]:
    """A version's metadata about its fit, whatever the data: settings, figures, epochs."""
    metrics = {
        **(metrics or {}),
        "loss": trained.history[-1].loss,
        "epochs_run": len(trained.history),
        "train_seconds": trained.seconds,
    }
    if spec.validation_fraction:
        metrics["val_loss"] = trained.history[trained.best_epoch - 1].val_loss
        metrics["best_epoch"] = trained.best_epoch  # the epoch whose weights were kept
    return {
        "training": wire_training(spec),  # TrainingConfig's fields
        "trainer": local_training(spec),
        "metrics": metrics,
        "history": [asdict(e) for e in trained.history],
        "age_mean": trained.age_mean,
        "age_std": trained.age_std,
    }


def run(
    store: Store,
    name: str,
    synthetic: SyntheticSpec,
    spec: TrainSpec,
    on_epoch: Callable[[Epoch], None],
    stop: training.StopSignal,
) -> Path:
    """Generate, fit, measure and stage a version; raises Cancelled once `stop` is set."""
    assert synthetic.seed is not None
    data = generate(
        synthetic.num_watchers, synthetic.num_movies, synthetic.num_types, synthetic.seed
    )
    trained = training.train(data, spec, synthetic.seed, on_epoch, stop)
    stats = {"age_mean": trained.age_mean, "age_std": trained.age_std}
    started = time.perf_counter()
    metrics = quality.evaluate(
        ServedModel(name, 0, trained.weights, stats), synthetic.num_types, synthetic.seed
    )
    metrics["evaluate_seconds"] = time.perf_counter() - started
    meta = new_metadata(synthetic=asdict(synthetic), **_fit_metadata(trained, spec, metrics))
    if stop.is_set():
        raise Cancelled("training was cancelled")
    return store.stage(name, trained.model, trained.weights, meta)


def run_dataset(
    store: Store,
    datasets: DatasetStore,
    name: str,
    source: DatasetTrainingSpec,
    spec: TrainSpec,
    on_epoch: Callable[[Epoch], None],
    stop: training.StopSignal,
) -> Path:
    """Load a stored dataset, fit on its training rows, measure it on the held-out watchers and
    stage a version whose catalogue is the kept movies, with the held-out watchers beside it;
    raises Cancelled once `stop` is set."""
    assert source.seed is not None
    dataset = datasets.load(source.dataset.name, source.dataset.version)
    prepared = rows.prepare(dataset, source)
    kept = prepared.movie_rows
    catalogue = Catalogue(
        dataset.movie_ids[kept], dataset.titles[kept], dataset.genres[kept], prepared.num_likes
    )
    dataset_info = dataset.info
    del dataset  # every rating's arrays: freed before the model takes its memory
    fitted = train_rows(len(prepared.train), spec.validation_fraction)
    spec = for_data(spec, fitted, prepared.train.num_columns)
    fit = sampled.train_sampled if spec.trainer == "sampled" else training.train_sparse
    trained = fit(prepared, spec, source.seed, on_epoch, stop)
    meta = new_metadata(
        dataset=asdict(source),
        dataset_info=dataset_info,
        **_fit_metadata(trained, spec),
        num_train_watchers=len(prepared.train),
        num_heldout_watchers=len(prepared.heldout),
        has_age=prepared.has_age,
        has_education=prepared.has_education,
    )
    started = time.perf_counter()
    served = ServedModel(name, 0, trained.weights, meta, catalogue)
    metrics = meta["metrics"]
    metrics.update(
        ranking.evaluate(
            served, prepared.heldout, prepared.heldout_watchers, source.seed, stop.is_set
        )
    )
    if trained.val_ndcg_at_100 is not None:
        metrics["val_ndcg_at_100"] = trained.val_ndcg_at_100
    metrics["evaluate_seconds"] = time.perf_counter() - started
    if stop.is_set():
        raise Cancelled("training was cancelled")
    # No Keras model file, whichever trainer fitted it: its weights.npz and metadata are all
    # serving and reproducing need (keras_model.build_model makes the Keras model again); a
    # model.keras took 62 MB of an ml-latest-small version, and would take ~190 MB at ML-25M's.
    staged = store.stage(name, None, trained.weights, meta, catalogue=catalogue)
    try:
        write_npz(
            staged / HELDOUT,
            {
                "watcher_ids": prepared.heldout_watchers.ids,
                "indptr": prepared.heldout.indptr,
                "columns": prepared.heldout.columns,  # their likes, as rows of the catalogue
                "age_years": prepared.heldout_watchers.age_years,
                "education": prepared.heldout_watchers.education,
            },
        )
        # Every kept watcher's likes, by dataset id: Reconstruct's watchers named by id.
        write_npz(
            staged / known_watchers.FILE,
            known_watchers.arrays(
                [
                    known_watchers.Group(
                        w.ids, likes.indptr, likes.columns, w.age_years, w.education
                    )
                    for likes, w in (
                        (prepared.train, prepared.train_watchers),
                        (prepared.heldout, prepared.heldout_watchers),
                    )
                ]
            ),
        )
        fsync_dir(staged)
    except BaseException:
        store.discard(staged)
        raise
    return staged


class _Jobs:
    """Reads stdin on its own thread, so that a stop reaches the job while it runs, or
    before it starts (a job stopped while queued, or while TensorFlow loads, never starts)."""

    def __init__(self, lines: IO[str]) -> None:
        self._lines = lines
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._current: tuple[int, training.StopSignal] | None = None
        self._stopped: set[int] = set()
        threading.Thread(target=self._read, name="stdin", daemon=True).start()

    def _read(self) -> None:
        for line in self._lines:
            message = json.loads(line)
            with self._lock:
                if "train" in message:
                    self._queue.put(message)
                elif (stopped := message.get("stop")) is not None:
                    self._stopped.add(stopped)
                    if self._current and self._current[0] == stopped:
                        self._current[1].set()
        with self._lock:  # the server is gone: stop, and take no more jobs
            if self._current is None:
                os._exit(0)  # nothing started: leave now, even in the middle of TF's import
            self._current[1].set()
        self._queue.put(None)

    def next(self) -> tuple[int, dict[str, Any], training.StopSignal] | None:
        message = self._queue.get()
        if message is None:
            return None
        stop = training.StopSignal()
        with self._lock:
            self._current = (message["id"], stop)
            if message["id"] in self._stopped:
                stop.set()
        return message["id"], message["train"], stop


def _gradient_registry() -> dict[str, Any]:
    """TensorFlow's global registry of gradient functions (empty where TensorFlow keeps it
    elsewhere: then nothing is dropped)."""
    try:
        from tensorflow.python.framework import ops

        return ops._gradient_registry._registry  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        return {}


def end_job(keras: Any, registered: set[str]) -> None:
    """Free what a finished job traced. clear_session() drops Keras's state, but each traced
    train step also left a `CustomGradient-N` entry in TensorFlow's global gradient registry
    (Keras's optimizer step goes through tf.distribute's all_reduce, a tf.custom_gradient),
    which is never removed and whose closure holds the step's whole graph (tensorflow#97697):
    ~5 MiB a fit, for the life of the process. `registered` is the registry's names before
    the job; the job's own are dropped, its graphs run no more."""
    keras.backend.clear_session()
    registry = _gradient_registry()
    for name in [n for n in registry if n.startswith("CustomGradient-") and n not in registered]:
        del registry[name]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s trainer: %(message)s")
    os.nice(NICENESS)
    # Ctrl-C reaches the whole process group: the server stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the channel to the server: this and no more
    os.dup2(2, 1)  # anything else printed lands in the server's log
    store = Store(Path(sys.argv[1]))
    datasets = DatasetStore(Path(sys.argv[1]))
    jobs = _Jobs(sys.stdin)
    keras = import_keras()  # TensorFlow's import, paid once, before the first job arrives

    def send(job_id: int, **event: Any) -> None:
        try:
            out.write(json.dumps({"id": job_id, **event}) + "\n")
        except BrokenPipeError:  # the server has gone: nobody to tell, nothing to finish
            os._exit(0)

    while (job := jobs.next()) is not None:
        job_id, train, stop = job
        if stop.is_set():
            send(job_id, cancelled="training was cancelled before it started")
            continue
        spec = TrainSpec(**train["spec"])
        registered = set(_gradient_registry())
        on_epoch = lambda e: send(job_id, epoch=asdict(e))  # noqa: B023, E731 (in the loop)
        try:
            # A full disk or a file size limit: RESOURCE_EXHAUSTED, as in the serving process.
            with storing(f"a new version of model {train['name']!r}"):
                if "dataset" in train:
                    source = resolve_dataset_training(train["dataset"])  # its dicts to a spec
                    staged = run_dataset(
                        store, datasets, train["name"], source, spec, on_epoch, stop
                    )
                else:
                    synthetic = SyntheticSpec(**train["synthetic"])
                    staged = run(store, train["name"], synthetic, spec, on_epoch, stop)
            send(job_id, staged=str(staged))
        except Cancelled as exc:
            send(job_id, cancelled=str(exc))
        except errors.ServiceError as exc:  # the request does not fit the data, or the disk
            send(job_id, refused=refusal(exc))
        except Exception as exc:  # reported to the server, the traceback stays in the log
            log.exception("training %r failed", train["name"])
            send(job_id, error=f"{type(exc).__name__}: {exc}")
        end_job(keras, registered)  # no graph state carried from one job to the next


if __name__ == "__main__":
    main()
