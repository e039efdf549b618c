"""Train settings: defaults, presets and bounds, resolved from the fields a request sets."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import InvalidArgument, ResourceExhausted, quoted

DEFAULT_MODEL = "default"
PRESETS = ("default", "notebook")


@dataclass(frozen=True)
class Limits:
    """Caps on one Train, set by the server's flags of the same names (--max-cells, ...)."""

    max_cells: int = 50_000_000  # num_watchers * num_movies: ~50 MB of uint8, minutes of CPU
    max_epochs: int = 1000
    max_embedding_dim: int = 256
    max_hidden_units: int = 4096


@dataclass(frozen=True)
class SyntheticSpec:
    """The generator's parameters (DESIGN.md §1 defaults)."""

    num_watchers: int = 1000
    num_movies: int = 80
    num_types: int = 10
    seed: int | None = None


@dataclass(frozen=True)
class TrainSpec:
    """How a model is trained: the notebook's settings, which PRESET_NOTEBOOK keeps."""

    preset: str = "notebook"
    embedding_dim: int = 5
    hidden_units: int = 32
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.001
    validation_fraction: float = 0.0
    embedding_initializer: str = "glorot_uniform"
    embedding_l2: float = 0.0
    early_stopping_patience: int = 0
    learning_rate_schedule: str = "constant"
    input_dropout: float = 0.0
    # Not on the wire (TrainingConfig): the presets choose them, and a version's metadata keeps
    # them apart, under "trainer" (LOCAL_FIELDS). "keras": Keras's fit on dense batches (the
    # notebook's training); "sampled": training/sampled.py, liked ids in, a sampled
    # cross-entropy over `negatives` movies a step (expected; 0: every movie), lazy Adam;
    # "auto": one of them by the size of the data (for_data).
    trainer: str = "keras"
    negatives: int = 2048
    # When > 0 (the dataset default, unless a request sets batch_size): batch_size grows, in
    # steps of itself, until an epoch of the fitted watchers is at most this many steps
    # (for_data).
    max_steps_per_epoch: int = 0


@dataclass(frozen=True)
class DatasetRef:
    """A stored dataset version; version 0 is the newest until the server resolves it."""

    name: str = ""
    version: int = 0


@dataclass(frozen=True)
class DatasetTrainingSpec:
    """How a stored dataset becomes training rows (DatasetTraining's defaults)."""

    dataset: DatasetRef = DatasetRef()
    like_threshold: float = 4.0
    min_likes_per_watcher: int = 5
    min_likes_per_movie: int = 1
    holdout_fraction: float = 0.1
    seed: int | None = None


SOURCES = ("synthetic", "dataset")

INITIALIZERS = (
    "zeros",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "orthogonal",
    "random_normal",
    "random_uniform",
    "truncated_normal",
)

SCHEDULES = ("constant", "cosine")
TRAINERS = ("keras", "sampled", "auto")
# "auto" trains Keras's dense batches up to this many fitted watchers x movies (ml-latest-small:
# ~2.8M; an epoch under a second), the sampled path above (ML-1M's shape: ~17M).
DENSE_CELLS = 5_000_000
# TrainSpec's fields that TrainingConfig has not
LOCAL_FIELDS = ("trainer", "negatives", "max_steps_per_epoch")


def wire_training(spec: TrainSpec) -> dict[str, Any]:
    """The fields of `spec` that TrainingConfig carries (a version's metadata "training")."""
    return {k: v for k, v in asdict(spec).items() if k not in LOCAL_FIELDS}


def local_training(spec: TrainSpec) -> dict[str, Any]:
    """The fields of `spec` that stay in the server (a version's metadata "trainer")."""
    return {k: getattr(spec, k) for k in LOCAL_FIELDS}


# Chosen by measurement over seeds 1-16 (benchmarks/quality.py; README): trained as the
# notebook trains, the movie vectors stay mostly glorot noise (purity ~0.25). A
# zero-initialised kernel starts every movie at one point, so only the data moves them
# apart; an L2 penalty on the kernel keeps noise from merging a group with its
# neighbour (groups g and g+1 are liked by almost the same types); a large step that
# decays to zero along a cosine nears the cross-entropy bound in 1.2x the notebook's steps
# (24 epochs of 16 batches against 10 of 32). Measured through the server's own Train
# path: purity >= 0.977 and cross-entropy <= 1.090 x Bayes on every one of those seeds.
_SYNTHETIC_DEFAULT = TrainSpec(
    preset="default",
    epochs=24,
    batch_size=64,
    learning_rate=0.02,
    embedding_initializer="zeros",
    embedding_l2=0.015,
    learning_rate_schedule="cosine",
)
# Chosen by benchmarks/real_quality.py's protocol (20 % of watchers held out; EASE, ALS and
# popularity on the same splits; README "Recommendations on real data") on ml-latest-small,
# seeds 1-3, among ~20 variants, then checked on an ML-1M-shaped generated directory. Wider
# (200 / 600, the sizes Mult-DAE uses on MovieLens) ranks better than 64 / 256 (0.89x EASE's
# Recall@20); glorot, not zeros: with absent watcher features a zero kernel never leaves
# zero. Adam at 0.003 decayed along a cosine, a small L2 penalty on the embedding kernel,
# dropout 0.5 on the ratings input (0.3 and 0.7 did worse). Early stopping on the NDCG@100 of
# a 10 % validation split, patience 10: a fixed 50 epochs (every watcher fitted) did as well
# on ml-latest-small (8 steps an epoch, the best epoch 25-40) but overfitted the ML-1M shape
# (76 steps an epoch, the best epoch 5): 0.89x EASE there, against 1.02x stopped early.
# 256 / 1024, batch 32, likes weighted 3x or 5x in the loss, or L2 on the other layers
# gained nothing measurable. Trained by training/sampled.py (ids in, a sampled cross-entropy
# over 2,048 movies a step, lazy Adam): on ml-latest-small (seeds 1-3) Recall@20 / NDCG@100
# 0.296 / 0.326 against Keras's 0.300 / 0.333 with these settings (0.947x / 0.936x EASE
# against 0.963x / 0.956x; lower on each seed, by 0.002-0.017), in ~15 s against ~30 s. A
# whole-catalogue sample (negatives 0) ranked the same as 2,048, so the sampling is not what
# loses, nor the lazy update of the embedding (a dense one, its L2 term on every row as Keras
# has it, did no better), nor the objective's scale (1 or sqrt(movies) instead of movies: no
# better); Keras's Adam also moves every output row at every step. On ML-1M's shape (seeds
# 1-3) the two are within the seeds' spread: sampled 0.983x / 0.995x EASE, Keras 0.986x /
# 1.005x (per seed the sampled path 0.008 lower to 0.006 higher). So "auto" keeps Keras's
# dense batches where they are cheap (up to DENSE_CELLS fitted watchers x movies) and trains
# the sampled path above. Batches of 128 or 256 ranked worse on ml-latest-small (0.281-0.284
# Recall@20). Many watchers make many steps: at the ML-25M shape (~131,000 fitted watchers,
# 2,056 steps of 64) an epoch took ~125 CPU-seconds (Keras: ~1,650 s) and the best epoch was
# the first (NDCG@100 0.183, then falling); in batches of 256 at the same learning rate an
# epoch took ~37 s and NDCG@100 rose to 0.223 by the sixth. So the batch grows, in steps of
# 64, to keep an epoch within 600 steps: 64 up to 38,400 fitted watchers (ml-latest-small,
# ML-1M), 128 at an ML-10M shape, 256 at ML-25M's.
_DATASET_DEFAULT = TrainSpec(
    preset="default",
    embedding_dim=200,
    hidden_units=600,
    epochs=50,
    batch_size=64,
    learning_rate=0.003,
    learning_rate_schedule="cosine",
    validation_fraction=0.1,
    early_stopping_patience=10,
    embedding_initializer="glorot_uniform",
    embedding_l2=1e-5,
    input_dropout=0.5,
    trainer="auto",
    negatives=2048,
    max_steps_per_epoch=600,
)
# Presets by the source of the training data; the notebook's settings are the same for any.
_PRESETS = {
    "synthetic": {"default": _SYNTHETIC_DEFAULT, "notebook": TrainSpec()},
    "dataset": {"default": _DATASET_DEFAULT, "notebook": TrainSpec()},
}


def for_data(spec: TrainSpec, fitted_watchers: int, num_movies: int) -> TrainSpec:
    """`spec` as it trains `fitted_watchers` x `num_movies`: trainer "auto" becomes "keras" up
    to DENSE_CELLS cells, else "sampled"; with max_steps_per_epoch set, the batch becomes the
    least multiple of its size that keeps an epoch within that many steps (at the dataset
    default: 64 up to 38,400 watchers; 256 at ML-25M's ~131,000)."""
    if spec.trainer == "auto":
        small = fitted_watchers * num_movies <= DENSE_CELLS
        spec = replace(spec, trainer="keras" if small else "sampled")
    cap = spec.max_steps_per_epoch
    if not cap or fitted_watchers <= spec.batch_size * cap:
        return spec
    multiple = math.ceil(fitted_watchers / (spec.batch_size * cap))
    return replace(spec, batch_size=spec.batch_size * multiple)


def _check_range(field: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InvalidArgument(field, f"must be between {low:g} and {high:g}, got {value:g}")


def resolve_synthetic(given: dict[str, Any], limits: Limits = Limits()) -> SyntheticSpec:
    """The defaults with the fields set in `given`, a random seed if none, bounds checked."""
    spec = replace(SyntheticSpec(), **given)
    if spec.seed is None:
        spec = replace(spec, seed=random.randrange(2**32))
    for f in ("num_watchers", "num_movies", "num_types"):
        if getattr(spec, f) < 0:
            raise InvalidArgument(f"synthetic.{f}", f"must be >= 0, got {getattr(spec, f)}")
    if spec.num_types > spec.num_movies:
        raise InvalidArgument(
            "synthetic.num_types",
            f"must be <= num_movies ({spec.num_movies}), got {spec.num_types}",
        )
    cells = spec.num_watchers * spec.num_movies
    if cells > limits.max_cells:
        raise ResourceExhausted(
            f"synthetic: num_watchers * num_movies = {cells} exceeds the server's cap "
            f"{limits.max_cells} (--max-cells)"
        )
    return spec


def resolve_training(
    given: dict[str, Any], limits: Limits = Limits(), source: str = "synthetic"
) -> TrainSpec:
    """The preset's settings for data from `source` (one of SOURCES) with the fields set in
    `given` put in, bounds checked."""
    preset = given.get("preset") or "default"
    if preset not in PRESETS:
        raise InvalidArgument("training.preset", f"must be one of {PRESETS}, got {quoted(preset)}")
    spec = replace(_PRESETS[source][preset], **{k: v for k, v in given.items() if k != "preset"})
    if "batch_size" in given:  # the caller's batch, as given, whatever the data
        spec = replace(spec, max_steps_per_epoch=0)
    _check_range("training.embedding_dim", spec.embedding_dim, 1, limits.max_embedding_dim)
    _check_range("training.hidden_units", spec.hidden_units, 1, limits.max_hidden_units)
    _check_range("training.epochs", spec.epochs, 1, limits.max_epochs)
    _check_range("training.batch_size", spec.batch_size, 1, 1_000_000)
    if not 0 < spec.learning_rate <= 1:
        raise InvalidArgument(
            "training.learning_rate", f"must be > 0 and <= 1, got {spec.learning_rate:g}"
        )
    if not 0 <= spec.validation_fraction < 1:
        raise InvalidArgument(
            "training.validation_fraction",
            f"must be >= 0 and < 1, got {spec.validation_fraction:g}",
        )
    if spec.trainer not in TRAINERS:
        raise InvalidArgument(
            "training.trainer", f"must be one of {TRAINERS}, got {quoted(spec.trainer)}"
        )
    if spec.negatives < 0:
        raise InvalidArgument("training.negatives", f"must be >= 0, got {spec.negatives}")
    if spec.learning_rate_schedule not in SCHEDULES:
        raise InvalidArgument(
            "training.learning_rate_schedule",
            f"must be one of {SCHEDULES}, got {quoted(spec.learning_rate_schedule)}",
        )
    if spec.embedding_initializer not in INITIALIZERS:
        raise InvalidArgument(
            "training.embedding_initializer",
            f"must be one of {', '.join(INITIALIZERS)}, got {quoted(spec.embedding_initializer)}",
        )
    _check_range("training.embedding_l2", spec.embedding_l2, 0, 1)
    _check_range("training.early_stopping_patience", spec.early_stopping_patience, 0, 1000)
    if not 0 <= spec.input_dropout < 1:
        raise InvalidArgument(
            "training.input_dropout", f"must be >= 0 and < 1, got {spec.input_dropout:g}"
        )
    if spec.early_stopping_patience and not spec.validation_fraction:
        raise InvalidArgument(
            "training.early_stopping_patience",
            "needs validation_fraction > 0 (it watches the validation split)",
        )
    return spec


def resolve_dataset_training(given: dict[str, Any]) -> DatasetTrainingSpec:
    """The defaults with the fields set in `given` (`dataset` as a dict of name and version),
    a random seed if none, bounds checked; the dataset's existence is the store's to check."""
    ref = replace(DatasetRef(), **given.get("dataset", {}))
    spec = replace(
        DatasetTrainingSpec(), **{k: v for k, v in given.items() if k != "dataset"}, dataset=ref
    )
    seed = random.randrange(2**32) if spec.seed is None else spec.seed
    if not ref.name:
        raise InvalidArgument("dataset.dataset.name", "required: the dataset to train on")
    if ref.version < 0:
        raise InvalidArgument(
            "dataset.dataset.version", f"must be >= 0 (0 = newest), got {ref.version}"
        )
    if not math.isfinite(spec.like_threshold):
        raise InvalidArgument(
            "dataset.like_threshold", f"must be finite, got {spec.like_threshold}"
        )
    for f in ("min_likes_per_watcher", "min_likes_per_movie"):
        if getattr(spec, f) < 0:
            raise InvalidArgument(f"dataset.{f}", f"must be >= 0, got {getattr(spec, f)}")
    if not 0 <= spec.holdout_fraction < 1:
        raise InvalidArgument(
            "dataset.holdout_fraction", f"must be >= 0 and < 1, got {spec.holdout_fraction:g}"
        )
    if not 0 <= seed < 2**64:
        raise InvalidArgument("dataset.seed", f"must be in [0, 2^64), got {seed}")
    return replace(spec, seed=seed)


def train_rows(num_watchers: int, validation_fraction: float) -> int:
    """Watchers Keras trains on: it holds out the last validation_fraction, rounding down."""
    return math.ceil(num_watchers * (1 - validation_fraction))


def check_split(synthetic: SyntheticSpec, training: TrainSpec) -> None:
    """A validation split must leave at least one watcher on each side (as Keras requires)."""
    if training.validation_fraction == 0:
        return
    rows = train_rows(synthetic.num_watchers, training.validation_fraction)
    if not 0 < rows < synthetic.num_watchers:
        raise InvalidArgument(
            "training.validation_fraction",
            f"{training.validation_fraction:g} of {synthetic.num_watchers} watchers leaves "
            "no watcher on one side of the split",
        )
