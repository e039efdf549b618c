"""The dataset model trained from sparse rows: liked ids in, a sampled cross-entropy, lazy Adam.

The same network as keras_model.build_model and the same five served arrays; only training
differs. Each step takes a batch of watchers as their liked movie ids, and:

- Input: the embedding of a watcher is the sum of its liked movies' rows of the embedding
  kernel (the bias-free Dense layer on its 0/1 row), after input dropout on the ids (each kept
  with probability 1 - p and scaled by 1 / (1 - p), as keras Dropout does on the 0/1 row).
- Output: the binary cross-entropy over every movie, estimated without bias: its terms over
  each watcher's liked movies exactly, and over the movies it does not like from a sample
  shared by the batch, each movie j in it independently with probability pi_j and weighted by
  1 / pi_j (Horvitz-Thompson). pi follows the movies' like counts mixed with uniform and is
  capped at 1, so the most liked movies are in every sample and count exactly. With pi = 1 for
  every movie the estimate is the full loss. Likes in the sample take their logits from the
  batch x sample product; the others one dot product each.
- Optimiser: Adam (Keras's update) on the hidden layer; on the embedding and output layers a
  lazy Adam updating only the rows the step touched (Keras 3's Adam densifies those gradients
  and rewrites every row each step). It minimises num_movies x (the mean cross-entropy +
  the embedding's L2 term), the same minimum as Keras's objective, so that Adam's epsilon
  (1e-7) stays small beside the gradients of a large catalogue: with the mean, a catalogue of
  59,047 movies learnt nothing past popularity in 3 epochs.

One TensorFlow code path (tf.function of gathers, segment sums, matmuls and scatters), which
TensorFlow places on a GPU when it sees one (not tested here: no GPU).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import TrainSpec
from ..errors import Cancelled
from ..jobs import Epoch, seconds_left
from . import keras_model, ranking
from .keras_model import VALIDATION_RANKED, StopSignal, Trained
from .rows import Inputs, Likes, Rows

BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7  # Keras's Adam defaults
# Share of the sampling distribution spread uniformly over the catalogue, the rest in
# proportion to the movies' like counts (chosen by measurement: README).
UNIFORM_SHARE = 0.2
VALIDATION_LOSS_WATCHERS = 500  # val_loss: the full cross-entropy of this many of them
AHEAD = 3  # batches made ahead of the step on a thread
SHUFFLE_STREAM = 2  # of the training's seed (rows.py's seed streams)


def inclusion_probabilities(counts: np.ndarray, negatives: int) -> np.ndarray:
    """Each movie's probability pi_j of being in a step's sample: min(1, s q_j), q the like
    counts mixed with uniform, s such that the expected sample is `negatives` movies; all 1
    when `negatives` is 0 or the catalogue is no larger."""
    m = len(counts)
    if negatives <= 0 or negatives >= m:
        return np.ones(m)
    counts = counts.astype(np.float64)
    total = counts.sum()
    q = np.full(m, UNIFORM_SHARE / m)
    q += (1 - UNIFORM_SHARE) * (counts / total if total else 1.0 / m)
    scale = float(negatives)
    for _ in range(100):  # the capped movies take 1 each, the others share the rest
        capped = scale * q >= 1.0
        rest = q[~capped].sum()
        new = (negatives - np.count_nonzero(capped)) / rest
        if abs(new - scale) <= 1e-9 * scale:
            break
        scale = new
    return np.minimum(1.0, scale * q)


@dataclass(frozen=True)
class Batch:
    """One step's input, all index arrays (no watchers x movies array)."""

    in_rows: np.ndarray  # int32: distinct embedding rows of the kept (not dropped) likes
    in_index: np.ndarray  # int32, per kept like: its row in in_rows
    in_watcher: np.ndarray  # int32, per kept like: its watcher in the batch
    features: np.ndarray  # float32 (n, 2)
    touched: np.ndarray  # int32: distinct output rows the step reads (sampled, or liked)
    pos_index: np.ndarray  # int32, per like outside the sample: its row in touched
    pos_watcher: np.ndarray  # int32, per like outside the sample: its watcher
    sample_index: np.ndarray  # int32, per sampled movie: its row in touched
    sample_weight: np.ndarray  # float32, per sampled movie: 1 / pi
    sample_likes: np.ndarray  # int32 (k, 2): (watcher, position in the sample) of its likes

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, f) for f in self.__dataclass_fields__)


def make_batch(
    likes: Likes,
    features: np.ndarray,
    rows: np.ndarray,
    pi: np.ndarray,
    dropout: float,
    rng: np.random.Generator,
    sample: np.ndarray | None = None,
) -> Batch:
    """The step input of `rows` of `likes`: dropout drawn on the ids, a sample drawn with
    inclusion probabilities `pi` (or the `sample` given, movie ids ascending)."""
    part = likes.take(rows)
    ids = part.columns
    watcher = np.repeat(np.arange(len(rows), dtype=np.int32), np.diff(part.indptr))
    kept = rng.random(len(ids)) >= dropout if dropout else slice(None)
    in_rows, in_index = np.unique(ids[kept], return_inverse=True)
    if sample is None:
        sample = np.flatnonzero(rng.random(len(pi)) < pi) if (pi < 1).any() else np.arange(len(pi))
    position = np.full(likes.num_columns, -1, dtype=np.int64)
    position[sample] = np.arange(len(sample))
    at = position[ids]
    inside = at >= 0
    touched, index = np.unique(np.concatenate([ids[~inside], sample]), return_inverse=True)
    outside = np.count_nonzero(~inside)
    return Batch(
        in_rows=in_rows.astype(np.int32),
        in_index=in_index.astype(np.int32),
        in_watcher=watcher[kept],
        features=features[rows],
        touched=touched.astype(np.int32),
        pos_index=index[:outside].astype(np.int32),
        pos_watcher=watcher[~inside],
        sample_index=index[outside:].astype(np.int32),
        sample_weight=(1.0 / pi[sample]).astype(np.float32),
        sample_likes=np.stack([watcher[inside], at[inside].astype(np.int32)], axis=1),
    )


class SampledModel:
    """The model's variables (the output kernel kept transposed: a step gathers its rows),
    the sampled loss, one training step and the full forward pass."""

    def __init__(self, num_movies: int, spec: TrainSpec, seed: int) -> None:
        import tensorflow as tf

        self.num_movies = num_movies
        self.spec = spec
        e, h = spec.embedding_dim, spec.hidden_units
        draw = tf.random.Generator.from_seed(seed)

        def glorot(shape: tuple[int, int], fans: tuple[int, int]) -> Any:
            limit = math.sqrt(6.0 / sum(fans))
            return draw.uniform(shape, -limit, limit)

        embedding = spec.embedding_initializer == "zeros"
        self.embedding = tf.Variable(
            tf.zeros([num_movies, e]) if embedding else glorot((num_movies, e), (num_movies, e))
        )
        self.hidden_kernel = tf.Variable(glorot((2 + e, h), (2 + e, h)))
        self.hidden_bias = tf.Variable(tf.zeros([h]))
        self.output_t = tf.Variable(glorot((num_movies, h), (h, num_movies)))
        self.output_bias = tf.Variable(tf.zeros([num_movies]))
        self.variables = (
            self.embedding,
            self.hidden_kernel,
            self.hidden_bias,
            self.output_t,
            self.output_bias,
        )
        self.moments = [
            (tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in self.variables
        ]
        self.iterations = tf.Variable(0, dtype=tf.int64)
        self._step = self._compile_step()
        self._logits = self._compile_logits()

    def loss(self, batch: Batch, dropout_scale: float = 1.0) -> Any:
        """The sampled estimate of the mean binary cross-entropy (Keras's loss) of `batch`."""
        import tensorflow as tf

        tensors = [tf.constant(a) for a in batch.arrays()]
        embedding, output, bias = (tf.gather(v, r) for v, r in self._rows_of(tensors))
        return self._loss(tensors, embedding, output, bias, dropout_scale)

    def _rows_of(self, tensors: list[Any]) -> list[tuple[Any, Any]]:
        touched = tensors[4]
        return [(self.embedding, tensors[0]), (self.output_t, touched), (self.output_bias, touched)]

    def _loss(
        self, t: list[Any], embedding: Any, output: Any, bias: Any, dropout_scale: float
    ) -> Any:
        import tensorflow as tf

        (_, in_index, in_watcher, features, _, pos_index, pos_watcher, sample_index) = t[:8]
        sample_weight, sample_likes = t[8], t[9]
        n = tf.shape(features)[0]
        embedded = tf.math.unsorted_segment_sum(tf.gather(embedding, in_index), in_watcher, n)
        merged = tf.concat([features, embedded * dropout_scale], 1)
        hidden = tf.nn.relu(tf.matmul(merged, self.hidden_kernel) + self.hidden_bias)
        liked = tf.reduce_sum(tf.gather(hidden, pos_watcher) * tf.gather(output, pos_index), 1)
        liked += tf.gather(bias, pos_index)
        sampled = tf.matmul(hidden, tf.gather(output, sample_index), transpose_b=True)
        sampled += tf.gather(bias, sample_index)
        y = tf.scatter_nd(
            sample_likes, tf.ones(tf.shape(sample_likes)[:1]), [n, tf.shape(sample_index)[0]]
        )
        # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
        total = tf.reduce_sum(tf.nn.softplus(-liked)) + tf.reduce_sum(
            y * tf.nn.softplus(-sampled) + (1.0 - y) * sample_weight * tf.nn.softplus(sampled)
        )
        return total / tf.cast(n * self.num_movies, tf.float32)

    def _compile_step(self) -> Any:
        import tensorflow as tf

        ids = tf.TensorSpec([None], tf.int32)
        signature = [
            *(ids, ids, ids, tf.TensorSpec([None, 2], tf.float32), ids, ids, ids, ids),
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None, 2], tf.int32),
            tf.TensorSpec([], tf.float32),
        ]
        scale = 1.0 / (1.0 - self.spec.input_dropout)
        l2 = self.spec.embedding_l2
        movies = float(self.num_movies)

        @tf.function(input_signature=signature)
        def step(*args: Any) -> Any:
            *t, learning_rate = args
            pairs = self._rows_of(t)
            rows = [tf.gather(v, r) for v, r in pairs]
            with tf.GradientTape() as tape:
                tape.watch(rows)
                loss = self._loss(t, rows[0], rows[1], rows[2], scale)
                objective = loss + l2 * tf.reduce_sum(tf.square(rows[0])) if l2 else loss
                objective *= movies  # see the module's docstring
            dense = [self.hidden_kernel, self.hidden_bias]
            grads = tape.gradient(objective, [rows[0], *dense, rows[1], rows[2]])
            self.iterations.assign_add(1)
            i = tf.cast(self.iterations, tf.float32)
            alpha = learning_rate * tf.sqrt(1 - BETA_2**i) / (1 - BETA_1**i)
            indices = [pairs[0][1], None, None, pairs[1][1], pairs[2][1]]
            for var, (m, v), g, r in zip(self.variables, self.moments, grads, indices, strict=True):
                g = tf.convert_to_tensor(g)
                if r is None:
                    m.assign_add((g - m) * (1 - BETA_1))
                    v.assign_add((tf.square(g) - v) * (1 - BETA_2))
                    var.assign_sub(alpha * m / (tf.sqrt(v) + EPSILON))
                else:  # each touched row once in r
                    m_rows = tf.gather(m, r)
                    v_rows = tf.gather(v, r)
                    m_rows += (g - m_rows) * (1 - BETA_1)
                    v_rows += (tf.square(g) - v_rows) * (1 - BETA_2)
                    m.scatter_update(tf.IndexedSlices(m_rows, r))
                    v.scatter_update(tf.IndexedSlices(v_rows, r))
                    step_rows = alpha * m_rows / (tf.sqrt(v_rows) + EPSILON)
                    var.scatter_sub(tf.IndexedSlices(step_rows, r))
            return loss

        return step

    def _compile_logits(self) -> Any:
        import tensorflow as tf

        ids = tf.TensorSpec([None], tf.int32)

        @tf.function(input_signature=[ids, ids, tf.TensorSpec([None, 2], tf.float32)])
        def logits(movie: Any, watcher: Any, features: Any) -> Any:
            n = tf.shape(features)[0]
            embedded = tf.math.unsorted_segment_sum(tf.gather(self.embedding, movie), watcher, n)
            merged = tf.concat([features, embedded], 1)
            hidden = tf.nn.relu(tf.matmul(merged, self.hidden_kernel) + self.hidden_bias)
            return tf.matmul(hidden, self.output_t, transpose_b=True) + self.output_bias

        return logits

    def step(self, batch: Batch, learning_rate: float) -> float:
        return float(self._step(*batch.arrays(), np.float32(learning_rate)))

    def logits(self, likes: Likes, features: np.ndarray) -> np.ndarray:
        """The served forward pass before the sigmoid, (len(likes), movies), from the ids."""
        watcher = np.repeat(np.arange(len(likes), dtype=np.int32), np.diff(likes.indptr))
        return self._logits(likes.columns.astype(np.int32), watcher, features).numpy()

    def weights(self) -> dict[str, np.ndarray]:
        """The arrays the server answers queries from (keras_model.export_weights's)."""
        return {
            "embedding": self.embedding.numpy(),
            "hidden_kernel": self.hidden_kernel.numpy(),
            "hidden_bias": self.hidden_bias.numpy(),
            "output_kernel": np.ascontiguousarray(self.output_t.numpy().T),
            "output_bias": self.output_bias.numpy(),
        }

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.embedding.assign(weights["embedding"])
        self.hidden_kernel.assign(weights["hidden_kernel"])
        self.hidden_bias.assign(weights["hidden_bias"])
        self.output_t.assign(weights["output_kernel"].T)
        self.output_bias.assign(weights["output_bias"])


def _batches(
    inputs: Inputs, spec: TrainSpec, pi: np.ndarray, seed: int, stopped: threading.Event
) -> Generator[Batch | None, None, None]:
    """Every epoch's batches then None, made AHEAD of the steps on a thread (numpy releases
    the GIL for most of the work); an error there is raised here."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=AHEAD)

    def put(item: Any) -> bool:
        """Hand `item` over unless the steps stopped; False once they have."""
        while not stopped.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        try:
            rng = np.random.default_rng([seed, SHUFFLE_STREAM])
            n = len(inputs.likes)
            for _ in range(spec.epochs):
                order = rng.permutation(n)
                for start in range(0, n, spec.batch_size):
                    rows = np.sort(order[start : start + spec.batch_size])
                    batch = make_batch(
                        inputs.likes, inputs.features, rows, pi, spec.input_dropout, rng
                    )
                    if not put(batch):
                        return
                if not put(None):
                    return
        except BaseException as exc:  # raised again in the training thread
            put(exc)

    thread = threading.Thread(target=make, name="sampled-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()
        thread.join()


def _validation(
    model: SampledModel, validation: Inputs, seed: int
) -> tuple[Callable[[], float] | None, Callable[[], float]]:
    """(NDCG@100 of the validation watchers' held-back likes, as keras_model's
    validation_ranking measures it, or None without a held-back like; val_loss: the mean
    full cross-entropy of VALIDATION_LOSS_WATCHERS of them, all their likes in, no dropout)."""
    ranked = np.arange(min(len(validation.likes), VALIDATION_RANKED))
    folded, held = validation.likes.take(ranked).fold_in(ranking.HELD_SHARE, seed)
    features = validation.features

    def score(rows: np.ndarray, dense: np.ndarray) -> np.ndarray:
        return model.logits(folded.take(rows), features[rows])

    def ndcg() -> float:
        return ranking.measure(ranking.by_scores(score), folded, held)["ndcg_at_100"]

    scored = np.arange(min(len(validation.likes), VALIDATION_LOSS_WATCHERS))
    likes = validation.likes.take(scored)

    def loss() -> float:
        z = model.logits(likes, features[scored]).astype(np.float64)
        total = np.logaddexp(0, z).sum()  # every movie as not liked, then the likes' terms
        watcher = np.repeat(np.arange(len(scored)), np.diff(likes.indptr))
        total -= z[watcher, likes.columns].sum()  # softplus(-z) = softplus(z) - z
        return float(total / max(1, z.size))

    return (ndcg if len(held.columns) else None), loss


def train_sampled(
    rows: Rows,
    spec: TrainSpec,
    seed: int,
    on_epoch: Callable[[Epoch], None] = lambda _: None,
    stop: StopSignal | None = None,
) -> Trained:
    """Fit the model on a dataset's training rows (as keras_model.train_sparse: a validation
    share drawn with `seed`, early stopping on its NDCG@100, the best epoch's weights kept);
    `stop` cancels between two steps (Cancelled)."""
    import keras
    import tensorflow as tf

    signal = stop or StopSignal()
    keras.utils.set_random_seed(seed % 2**32)
    start = time.perf_counter()
    fitted, validation = rows.validation_split(spec.validation_fraction, seed)
    movies = rows.train.num_columns
    counts = fitted.likes.counts()
    model = SampledModel(movies, spec, seed % 2**32)
    # As keras_model's _start_from_the_likes: a movie no fitted watcher likes never moves
    # its embedding row; the output bias starts at each movie's log-odds of a like.
    model.embedding.assign(model.embedding * tf.constant((counts > 0)[:, None], tf.float32))
    if spec.preset == "default":
        share = (counts + 0.5) / (len(fitted.likes) + 1.0)
        model.output_bias.assign(np.log(share / (1 - share)).astype(np.float32))
    ndcg, val_loss = _validation(model, validation, seed) if validation else (None, None)
    pi = inclusion_probabilities(counts, spec.negatives)
    steps = math.ceil(len(fitted.likes) / spec.batch_size)
    history: list[Epoch] = []
    monitored: list[float] = []
    best: dict[str, np.ndarray] | None = None
    best_value = -math.inf
    stopped = threading.Event()
    batches = _batches(fitted, spec, pi, seed, stopped)
    done = 0
    try:
        for epoch in range(1, spec.epochs + 1):
            epoch_start = reported = time.perf_counter()
            losses: list[float] = []
            for step in range(1, steps + 1):
                batch = next(batches)
                assert batch is not None
                if signal.is_set():
                    raise Cancelled("training was cancelled")
                rate = spec.learning_rate
                if spec.learning_rate_schedule == "cosine":
                    rate *= 0.5 * (1 + math.cos(math.pi * done / (spec.epochs * steps)))
                losses.append(model.step(batch, rate))
                done += 1
                now = time.perf_counter()
                if now - reported >= keras_model.PROGRESS_SECONDS and step < steps:
                    reported = now
                    on_epoch(_event(spec, epoch, step, steps, losses, math.nan, epoch_start, start))
            if next(batches) is not None:
                raise AssertionError("the batches of an epoch are out of step")
            if signal.is_set():
                raise Cancelled("training was cancelled")
            figure = val_loss() if val_loss else math.nan
            event = _event(spec, epoch, steps, steps, losses, figure, epoch_start, start)
            history.append(event)
            monitored.append(ndcg() if ndcg else -figure)  # higher is better
            on_epoch(event)
            patience = spec.early_stopping_patience
            if not patience:
                continue
            # As Keras's EarlyStopping: the first epoch of the best figure is kept.
            if monitored[-1] > best_value:
                best_value, best = monitored[-1], model.weights()
            if len(monitored) - 1 - int(np.nanargmax(monitored)) >= patience:
                break
    finally:
        batches.close()
    kept = 1 + int(np.nanargmax(monitored)) if spec.early_stopping_patience else len(history)
    weights = best if best is not None else model.weights()
    return Trained(
        model=None,
        weights=weights,
        age_mean=rows.age_mean,
        age_std=rows.age_std,
        history=history,
        best_epoch=kept,
        seconds=time.perf_counter() - start,
        val_ndcg_at_100=monitored[kept - 1] if ndcg else None,
    )


def _event(
    spec: TrainSpec,
    epoch: int,
    step: int,
    steps: int,
    losses: list[float],
    val_loss: float,
    epoch_start: float,
    start: float,
) -> Epoch:
    now = time.perf_counter()
    epoch_left, run_left = seconds_left(
        epoch, spec.epochs, step, steps, now - epoch_start, now - start
    )
    return Epoch(
        epoch=epoch,
        epochs=spec.epochs,
        loss=float(np.mean(losses)),
        val_loss=val_loss,
        elapsed_seconds=now - start,
        step=step,
        steps=steps,
        epoch_seconds_left=epoch_left,
        run_seconds_left=run_left,
    )
