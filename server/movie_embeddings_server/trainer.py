"""Train jobs: generate, fit, measure, store; run on a worker thread that streams epochs back."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import asdict

from . import training
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
        stop: threading.Event | None = None,
    ) -> ServedModel:
        """Train synchronously on this thread; raises training.Cancelled when `stop` is set."""
        stop = stop or threading.Event()
        assert synthetic.seed is not None
        data = generate(
            synthetic.num_watchers, synthetic.num_movies, synthetic.num_types, synthetic.seed
        )
        trained = training.train(data, spec, synthetic.seed, on_epoch, stop.is_set)
        metrics = {"loss": trained.history["loss"][-1], "train_seconds": trained.seconds}
        if "val_loss" in trained.history:
            metrics["val_loss"] = trained.history["val_loss"][-1]
        meta = new_metadata(
            synthetic=asdict(synthetic),
            training=asdict(spec),
            age_mean=trained.age_mean,
            age_std=trained.age_std,
            metrics=metrics,
            history=trained.history,
        )
        if stop.is_set():
            raise training.Cancelled("training was cancelled")
        return self.store.save(name, trained.model, trained.weights, meta)

    def stream(
        self, name: str, synthetic: SyntheticSpec, spec: TrainSpec, stop: threading.Event
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
