"""Train jobs: generate, fit, measure, store; run on a worker thread that streams epochs back."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict

from . import quality, training
from .config import SyntheticSpec, TrainSpec
from .data import generate
from .errors import ResourceExhausted
from .inference import ServedModel
from .store import Store, new_metadata

_DONE = object()


class Trainer:
    """Runs at most `max_concurrent` trainings at once and stores each result as a new version."""

    def __init__(self, store: Store, max_concurrent: int = 1) -> None:
        self.store = store
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.max_concurrent = max_concurrent

    def train(
        self,
        name: str,
        synthetic: SyntheticSpec,
        spec: TrainSpec,
        on_epoch=lambda _: None,
        stop: training.StopSignal | None = None,
    ) -> ServedModel:
        """Train synchronously on this thread; raises training.Cancelled when `stop` is set."""
        stop = stop or training.StopSignal()
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
        metrics |= {
            "loss": trained.history[-1].loss,
            "epochs_run": len(trained.history),
            "train_seconds": trained.seconds,
            "evaluate_seconds": time.perf_counter() - started,
        }
        if spec.validation_fraction:
            metrics["val_loss"] = trained.history[trained.best_epoch - 1].val_loss
        meta = new_metadata(
            synthetic=asdict(synthetic),
            training=asdict(spec),
            metrics=metrics,
            history=[asdict(e) for e in trained.history],
            **stats,
        )
        if stop.is_set():
            raise training.Cancelled("training was cancelled")
        return self.store.save(name, trained.model, trained.weights, meta)

    def stream(
        self, name: str, synthetic: SyntheticSpec, spec: TrainSpec, stop: training.StopSignal
    ) -> Iterator[training.Epoch | ServedModel]:
        """Yield each epoch, then the stored version; refuses when all training slots are busy."""
        if not self._slots.acquire(blocking=False):
            raise ResourceExhausted(
                f"{self.max_concurrent} training(s) already running (the server's "
                "--max-concurrent-trains); retry when one has finished"
            )
        events: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                events.put(self.train(name, synthetic, spec, events.put, stop))
            except BaseException as exc:  # handed to the caller's thread
                events.put(exc)
            finally:
                events.put(_DONE)
                self._slots.release()

        threading.Thread(target=work, name=f"train-{name}", daemon=True).start()
        try:
            while (event := events.get()) is not _DONE:
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            stop.set()  # a caller that stops listening cancels the training
