"""The notebook's two-input Keras model: build, train with per-epoch progress, export weights."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import TrainSpec, train_rows
from .data import Dataset
from .errors import Cancelled

# Quiet TensorFlow's start-up banner; set before the first import of tensorflow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class StopSignal:
    """Cancels a training from any thread, within one TensorFlow call (<= 32 steps) of `set`.

    Setting the model's `stop_training` directly spares a Python callback after every
    batch, which the training loop would otherwise pay for on each step.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._model: Any = None

    def set(self) -> None:
        with self._lock:
            self._event.set()
            if self._model is not None:
                self._model.stop_training = True

    def is_set(self) -> bool:
        return self._event.is_set()

    def attach(self, model: Any) -> None:
        """Stop `model` when set (and at once if set already)."""
        with self._lock:
            self._model = model
            if self._event.is_set():
                model.stop_training = True


@dataclass(frozen=True)
class Epoch:
    """The end of one epoch."""

    epoch: int
    epochs: int
    loss: float
    val_loss: float
    elapsed_seconds: float


@dataclass
class Trained:
    """A trained Keras model, its exported weights and the age statistics it was trained with."""

    model: Any  # keras.Model
    weights: dict[str, np.ndarray]
    age_mean: float
    age_std: float
    history: list[Epoch]
    best_epoch: int  # the epoch whose weights were kept (the last, unless stopped early)
    seconds: float


def build_model(
    num_movies: int, spec: TrainSpec, steps: int = 1, steps_per_execution: int = 1
) -> Any:
    """Ratings -> bias-free Dense (embedding); concat with (age, education) -> relu -> sigmoid.

    `steps` is the number of optimizer steps the training will take (for the cosine
    schedule); `steps_per_execution` how many of them one TensorFlow call runs.
    """
    import keras

    ratings = keras.Input(shape=(num_movies,), name="ratings")
    embedding = keras.layers.Dense(
        spec.embedding_dim,
        use_bias=False,
        kernel_initializer=spec.embedding_initializer,
        kernel_regularizer=keras.regularizers.L2(spec.embedding_l2) if spec.embedding_l2 else None,
        name="embedding",
    )(ratings)
    features = keras.Input(shape=(2,), name="features")
    merged = keras.layers.concatenate([features, embedding], name="merge")
    hidden = keras.layers.Dense(spec.hidden_units, activation="relu", name="hidden")(merged)
    output = keras.layers.Dense(num_movies, activation="sigmoid", name="output")(hidden)
    model = keras.Model(inputs=[ratings, features], outputs=output, name="movie_embeddings")
    learning_rate: Any = spec.learning_rate
    if spec.learning_rate_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(spec.learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        steps_per_execution=steps_per_execution,
    )
    return model


def export_weights(model: Any) -> dict[str, np.ndarray]:
    """The arrays the server answers queries from (inference.WEIGHT_NAMES)."""
    # Variable.numpy(), not get_weights(): the latter warns under numpy 2 (copy keyword).
    hidden_kernel, hidden_bias = (w.numpy() for w in model.get_layer("hidden").weights)
    output_kernel, output_bias = (w.numpy() for w in model.get_layer("output").weights)
    return {
        "embedding": model.get_layer("embedding").kernel.numpy(),
        "hidden_kernel": hidden_kernel,
        "hidden_bias": hidden_bias,
        "output_kernel": output_kernel,
        "output_bias": output_bias,
    }


def age_stats(age_years: np.ndarray) -> tuple[float, float]:
    """Mean and (population) std of the training ages; std 1 when all ages are equal."""
    std = float(age_years.std())
    return float(age_years.mean()), std if std > 0 else 1.0


def train(
    data: Dataset,
    spec: TrainSpec,
    seed: int,
    on_epoch: Callable[[Epoch], None] = lambda _: None,
    stop: StopSignal | None = None,
) -> Trained:
    """Fit the model on `data`; `on_epoch` sees each epoch, `stop` can cancel (Cancelled)."""
    signal = stop or StopSignal()
    import keras

    keras.utils.set_random_seed(seed % 2**32)
    age_mean, age_std = age_stats(data.age_years)
    features = np.column_stack([(data.age_years - age_mean) / age_std, data.education]).astype(
        np.float32
    )
    ratings = data.ratings.astype(np.float32)
    rows = train_rows(len(ratings), spec.validation_fraction)
    steps_per_epoch = math.ceil(rows / spec.batch_size)
    # Several steps per TensorFlow call: ~6 % faster than one at the default sizes (the
    # tiny model's steps are mostly call overhead); capped so a stop lands within 32 steps.
    model = build_model(
        ratings.shape[1], spec, spec.epochs * steps_per_epoch, min(steps_per_epoch, 32)
    )
    history: list[Epoch] = []
    start = time.perf_counter()

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            signal.attach(self.model)  # after fit has reset model.stop_training

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            history.append(
                Epoch(
                    epoch=epoch + 1,
                    epochs=spec.epochs,
                    loss=float(logs.get("loss", float("nan"))),
                    val_loss=float(logs.get("val_loss", float("nan"))),
                    elapsed_seconds=time.perf_counter() - start,
                )
            )
            on_epoch(history[-1])

    callbacks: list[Any] = [Progress()]
    if spec.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                patience=spec.early_stopping_patience, restore_best_weights=True
            )
        )
    model.fit(
        x=[ratings, features],
        y=ratings,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        validation_split=spec.validation_fraction,
        callbacks=callbacks,
        verbose=0,
    )
    if signal.is_set():
        raise Cancelled("training was cancelled")
    best = len(history)
    if spec.early_stopping_patience:
        # Keras 3's EarlyStopping restores, at the end of training (stopped early or
        # not), the weights of the first epoch with the least val_loss.
        best = 1 + int(np.nanargmin([e.val_loss for e in history]))
    return Trained(
        model=model,
        weights=export_weights(model),
        age_mean=age_mean,
        age_std=age_std,
        history=history,
        best_epoch=best,
        seconds=time.perf_counter() - start,
    )
