"""Train settings: defaults, presets and bounds, resolved from zero-means-default fields."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

from .errors import InvalidArgument, ResourceExhausted

DEFAULT_MODEL = "default"
PRESETS = ("default", "notebook")
MAX_CELLS = 50_000_000  # num_watchers * num_movies: ~50 MB of uint8 ratings, minutes of CPU


@dataclass(frozen=True)
class SyntheticSpec:
    """The generator's parameters (DESIGN.md §1 defaults)."""

    num_watchers: int = 1000
    num_movies: int = 80
    num_types: int = 10
    seed: int | None = None


@dataclass(frozen=True)
class TrainSpec:
    """How a model is trained; `embedding_initializer` follows the preset."""

    preset: str = "default"
    embedding_dim: int = 5
    hidden_units: int = 32
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.001
    validation_fraction: float = 0.0
    embedding_initializer: str = "zeros"


# A zero-initialised embedding kernel lets the gradient alone shape the movie
# vectors, so movies of a group end up together (DESIGN.md §1); glorot noise does not wash out.
_PRESETS = {
    "default": TrainSpec(),
    "notebook": TrainSpec(preset="notebook", embedding_initializer="glorot_uniform"),
}


def _override(base: Any, given: dict[str, Any]) -> Any:
    """`base` with every truthy (set) value of `given` put in."""
    return replace(base, **{k: v for k, v in given.items() if v})


def _check_range(field: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InvalidArgument(field, f"must be between {low:g} and {high:g}, got {value:g}")


def resolve_synthetic(given: dict[str, Any], *, max_cells: int = MAX_CELLS) -> SyntheticSpec:
    """Fill defaults and a random seed into `given` (zero = default) and check the bounds."""
    seed = given.get("seed")
    spec = _override(SyntheticSpec(), {k: v for k, v in given.items() if k != "seed"})
    spec = replace(spec, seed=random.randrange(2**32) if seed is None else seed)
    for f in ("num_watchers", "num_movies", "num_types"):
        if getattr(spec, f) < 0:
            raise InvalidArgument(f"synthetic.{f}", f"must be >= 0, got {getattr(spec, f)}")
    if spec.num_types > spec.num_movies:
        raise InvalidArgument(
            "synthetic.num_types",
            f"must be <= num_movies ({spec.num_movies}), got {spec.num_types}",
        )
    cells = spec.num_watchers * spec.num_movies
    if cells > max_cells:
        raise ResourceExhausted(
            f"synthetic: num_watchers * num_movies = {cells} exceeds the server's cap {max_cells}"
        )
    return spec


def resolve_training(given: dict[str, Any]) -> TrainSpec:
    """The preset's settings with the set fields of `given` put in, bounds checked."""
    preset = given.get("preset") or "default"
    if preset not in _PRESETS:
        raise InvalidArgument("training.preset", f"must be one of {PRESETS}, got {preset!r}")
    spec = _override(_PRESETS[preset], {k: v for k, v in given.items() if k != "preset"})
    _check_range("training.embedding_dim", spec.embedding_dim, 1, 256)
    _check_range("training.hidden_units", spec.hidden_units, 1, 4096)
    _check_range("training.epochs", spec.epochs, 1, 1000)
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
    return spec


def check_split(synthetic: SyntheticSpec, training: TrainSpec) -> None:
    """A validation split must leave at least one watcher on each side (as Keras requires)."""
    if training.validation_fraction == 0:
        return
    train_rows = math.ceil(synthetic.num_watchers * (1 - training.validation_fraction))
    if not 0 < train_rows < synthetic.num_watchers:
        raise InvalidArgument(
            "training.validation_fraction",
            f"{training.validation_fraction:g} of {synthetic.num_watchers} watchers leaves "
            "no watcher on one side of the split",
        )
