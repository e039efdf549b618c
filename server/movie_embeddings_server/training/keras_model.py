"""The notebook's two-input Keras model: build, train with progress events, export weights."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import TrainSpec, train_rows
from ..errors import Cancelled
from ..jobs import Epoch, seconds_left
from . import ranking
from .rows import age_stats
from .synthetic import Dataset

if TYPE_CHECKING:
    from .rows import Inputs, Likes, Rows

# Quiet TensorFlow's start-up banner; set before the first import of tensorflow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROGRESS_SECONDS = 2.0  # inside a long epoch, a progress event at least this often
# Work of one TensorFlow call, in multiply-adds of the two big layers (batch x movies x
# (embedding + hidden)): a stop lands, and a progress event goes out, between two calls.
# ~2e9 is ~0.3 s on two cores.
EXECUTION_WORK = 2_000_000_000
# Validation watchers whose NDCG@100 early stopping watches: enough to rank by (its standard
# error is ~0.01 at a few hundred), few enough that a big catalogue's epoch is not spent on it.
VALIDATION_RANKED = 2_000


class StopSignal:
    """Cancels a training from any thread, within one TensorFlow call (<= 32 steps, and
    ~EXECUTION_WORK) of `set`.

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
                self._stop(self._model)

    def is_set(self) -> bool:
        return self._event.is_set()

    def attach(self, model: Any) -> None:
        """Stop `model` when set (and at once if set already)."""
        with self._lock:
            self._model = model
            if self._event.is_set():
                self._stop(model)

    @staticmethod
    def _stop(model: Any) -> None:
        # fit still runs the epoch's validation pass after its training loop stops.
        model.stop_training = True
        model.stop_evaluating = True


@dataclass
class Trained:
    """A trained Keras model, its exported weights and the age statistics it was trained with."""

    model: Any  # keras.Model, stored with the version as model.keras; None: not stored
    weights: dict[str, np.ndarray]
    age_mean: float
    age_std: float
    history: list[Epoch]
    best_epoch: int  # the epoch whose weights were kept (the last, unless stopped early)
    seconds: float
    val_ndcg_at_100: float | None = None  # of the kept epoch, with a validation ranking


def build_model(
    num_movies: int, spec: TrainSpec, steps: int = 1, steps_per_execution: int = 1
) -> Any:
    """Ratings -> bias-free Dense (embedding); concat with (age, education) -> relu -> sigmoid.

    `steps` is the number of optimizer steps the training will take (for the cosine
    schedule); `steps_per_execution` how many of them one TensorFlow call runs.
    """
    import keras

    ratings = keras.Input(shape=(num_movies,), name="ratings")
    embedded = ratings
    if spec.input_dropout:  # training only: the served forward pass is the layers below
        embedded = keras.layers.Dropout(spec.input_dropout, name="input_dropout")(ratings)
    embedding = keras.layers.Dense(
        spec.embedding_dim,
        use_bias=False,
        kernel_initializer=spec.embedding_initializer,
        kernel_regularizer=keras.regularizers.L2(spec.embedding_l2) if spec.embedding_l2 else None,
        name="embedding",
    )(embedded)
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


def steps_per_execution(steps_per_epoch: int, num_movies: int, spec: TrainSpec) -> int:
    """Steps one TensorFlow call runs: several while steps are cheap (~6 % faster at the
    synthetic default sizes, where a step is mostly call overhead), one when a step is heavy,
    so that a stop or a progress event never waits long."""
    work = spec.batch_size * num_movies * (spec.embedding_dim + spec.hidden_units)
    return max(1, min(steps_per_epoch, 32, EXECUTION_WORK // work))


def _fit(
    model: Any,
    spec: TrainSpec,
    steps: int,
    on_epoch: Callable[[Epoch], None],
    signal: StopSignal,
    measure: Any = None,
    **fit_args: Any,
) -> tuple[list[Epoch], int, float]:
    """model.fit with progress events (`steps` an epoch) and early stopping on val_loss, or on
    the figure a `measure` callback (ValidationRanking) puts in each epoch's logs: the epochs,
    the one whose weights were kept, seconds."""
    import keras

    history: list[Epoch] = []
    monitor, mode = (measure.monitor, "max") if measure else ("val_loss", "min")
    start = time.perf_counter()

    class Progress(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0
            self.reported = self.epoch_started = start

        def on_train_begin(self, logs: Any = None) -> None:
            signal.attach(self.model)  # after fit has reset model.stop_training

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch + 1
            self.epoch_started = time.perf_counter()

        def on_test_begin(self, logs: Any = None) -> None:
            signal.attach(self.model)  # after evaluate has reset model.stop_evaluating

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            # Once per TensorFlow call (steps_per_execution steps); `batch` is its last step.
            if time.perf_counter() - self.reported >= PROGRESS_SECONDS and batch + 1 < steps:
                self._report(logs or {}, batch + 1)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            history.append(self._report(logs or {}, steps))

        def _report(self, logs: dict[str, Any], step: int) -> Epoch:
            self.reported = time.perf_counter()
            epoch_left, run_left = seconds_left(
                self.epoch,
                spec.epochs,
                step,
                steps,
                self.reported - self.epoch_started,
                self.reported - start,
            )
            event = Epoch(
                epoch=self.epoch,
                epochs=spec.epochs,
                loss=float(logs.get("loss", float("nan"))),
                val_loss=float(logs.get("val_loss", float("nan"))),
                elapsed_seconds=self.reported - start,
                step=step,
                steps=steps,
                epoch_seconds_left=epoch_left,
                run_seconds_left=run_left,
            )
            on_epoch(event)
            return event

    # In this order: each sees the logs the ones before it filled in.
    callbacks: list[Any] = [*([measure] if measure else []), Progress()]
    if spec.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor, patience=spec.early_stopping_patience, mode=mode, restore_best_weights=True
            )
        )
    model.fit(epochs=spec.epochs, callbacks=callbacks, verbose=0, **fit_args)
    if signal.is_set():
        raise Cancelled("training was cancelled")
    best = len(history)
    if spec.early_stopping_patience:
        # Keras 3's EarlyStopping restores, at the end of training (stopped early or
        # not), the weights of the first epoch with the best monitored figure.
        if measure:
            best = 1 + int(np.nanargmax(measure.values))
        else:
            best = 1 + int(np.nanargmin([e.val_loss for e in history]))
    return history, best, time.perf_counter() - start


def train(
    data: Dataset,
    spec: TrainSpec,
    seed: int,
    on_epoch: Callable[[Epoch], None] = lambda _: None,
    stop: StopSignal | None = None,
) -> Trained:
    """Fit the model on synthetic `data`; `on_epoch` sees each epoch (and progress inside a
    long one), `stop` can cancel (Cancelled)."""
    signal = stop or StopSignal()
    import keras

    keras.utils.set_random_seed(seed % 2**32)
    age_mean, age_std = age_stats(data.age_years)
    features = np.column_stack([(data.age_years - age_mean) / age_std, data.education]).astype(
        np.float32
    )
    ratings = data.ratings.astype(np.float32)
    rows = train_rows(len(ratings), spec.validation_fraction)
    steps = math.ceil(rows / spec.batch_size)
    movies = ratings.shape[1]
    model = build_model(movies, spec, spec.epochs * steps, steps_per_execution(steps, movies, spec))
    history, best, seconds = _fit(
        model,
        spec,
        steps,
        on_epoch,
        signal,
        x=[ratings, features],
        y=ratings,
        batch_size=spec.batch_size,
        validation_split=spec.validation_fraction,
    )
    return Trained(model, export_weights(model), age_mean, age_std, history, best, seconds)


def train_sparse(
    rows: Rows,
    spec: TrainSpec,
    seed: int,
    on_epoch: Callable[[Epoch], None] = lambda _: None,
    stop: StopSignal | None = None,
) -> Trained:
    """Fit the model on a dataset's training rows, densifying one batch at a time; a
    validation share of them (drawn with `seed`) gives val_loss."""
    signal = stop or StopSignal()
    import keras

    keras.utils.set_random_seed(seed % 2**32)
    fitted, validation = rows.validation_split(spec.validation_fraction, seed)
    steps = math.ceil(len(fitted.likes) / spec.batch_size)
    movies = rows.train.num_columns
    model = build_model(movies, spec, spec.epochs * steps, steps_per_execution(steps, movies, spec))
    _start_from_the_likes(model, fitted.likes, spec)
    measure = validation_ranking(validation, seed) if validation else None
    history, best, seconds = _fit(
        model,
        spec,
        steps,
        on_epoch,
        signal,
        measure,
        x=_batches(fitted, spec.batch_size, seed % 2**32),
        validation_data=_batches(validation, spec.batch_size) if validation else None,
        shuffle=False,  # the pipeline shuffles
    )
    return Trained(
        model,
        export_weights(model),
        rows.age_mean,
        rows.age_std,
        history,
        best,
        seconds,
        measure.values[best - 1] if measure else None,
    )


def _start_from_the_likes(model: Any, likes: Likes, spec: TrainSpec) -> None:
    """Initial values the fitted likes decide. A movie no fitted watcher likes is never an
    input, so no gradient reaches its row of the embedding kernel: the row starts at zero,
    not as noise that every watcher who likes the movie later (a held-out one, a new one)
    would get in its vector. The default preset also starts each movie's output bias at the
    log-odds of its share of likes (smoothed), not at 0 (probability 0.5): the first epochs
    then learn tastes, not popularity (on ml-latest-small the best epoch came ~2x sooner)."""
    counts = likes.counts()
    kernel = model.get_layer("embedding").kernel
    kernel.assign(kernel.numpy() * (counts > 0)[:, None])
    if spec.preset == "default":
        share = (counts + 0.5) / (len(likes) + 1.0)
        model.get_layer("output").bias.assign(np.log(share / (1 - share)).astype(np.float32))


def validation_ranking(validation: Inputs, seed: int) -> Any:
    """A Keras callback putting "val_ndcg_at_100" in each epoch's logs: NDCG@100 of the
    validation watchers' held-back likes ranked from the rest of their likes, the fold-in the
    held-out watchers are measured with. None when no validation watcher has a like to hold
    back. Ranking quality, not val_loss, is what a recommender is for: val_loss keeps falling
    while the model learns each movie's popularity, long after the rankings stopped gaining.
    At most VALIDATION_RANKED watchers are ranked, so that a large dataset's epochs are not
    spent measuring."""
    import keras

    # The validation watchers are a random share already: the first ones are a random few.
    ranked = np.arange(min(len(validation.likes), VALIDATION_RANKED))
    folded, held = validation.likes.take(ranked).fold_in(ranking.HELD_SHARE, seed)
    if not len(held.columns):
        return None

    def score(rows: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        inputs = [ratings, validation.features[rows]]
        return keras.ops.convert_to_numpy(callback.model(inputs, training=False))

    class ValidationRanking(keras.callbacks.Callback):
        monitor = "val_ndcg_at_100"

        def __init__(self) -> None:
            super().__init__()
            self.values: list[float] = []

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            value = float("nan")  # when cancelled: there is nothing to choose any more
            if not self.model.stop_training:
                value = ranking.measure(ranking.by_scores(score), folded, held)["ndcg_at_100"]
            self.values.append(value)
            if logs is not None:
                logs[self.monitor] = value

    callback = ValidationRanking()
    return callback


def _batches(inputs: Inputs, batch_size: int, seed: int | None = None) -> Any:
    """A tf.data pipeline of dense batches ((ratings, features), ratings), each built from
    the sparse rows when Keras asks for it; shuffled each epoch when `seed` is given.

    Measured on ml-latest-small (batch 64): as fast per step as dense numpy arrays, where
    a keras.utils.PyDataset or a Python generator of the same batches took 2x as long."""
    import tensorflow as tf

    likes = tf.RaggedTensor.from_row_splits(inputs.likes.columns, inputs.likes.indptr)
    features = tf.constant(inputs.features)
    num_columns = tf.constant(inputs.likes.num_columns, tf.int64)

    def dense(rows: Any) -> Any:
        batch = tf.gather(likes, rows)
        cells = tf.stack([batch.value_rowids(), tf.cast(batch.flat_values, tf.int64)], axis=1)
        ones = tf.ones(tf.shape(cells)[:1], tf.float32)
        ratings = tf.scatter_nd(cells, ones, tf.stack([tf.size(rows, tf.int64), num_columns]))
        return (ratings, tf.gather(features, rows)), ratings

    rows = tf.data.Dataset.range(len(inputs.likes))
    if seed is not None:
        rows = rows.shuffle(len(inputs.likes), seed=seed, reshuffle_each_iteration=True)
    return rows.batch(batch_size).map(dense).prefetch(1)
