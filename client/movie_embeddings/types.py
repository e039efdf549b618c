"""The SDK's values: frozen dataclasses and float32 numpy arrays, never protobuf messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class ModelRef:
    """A model version; version 0 means the newest."""

    name: str = DEFAULT_MODEL
    version: int = 0


@dataclass(frozen=True)
class SyntheticData:
    """The generated training data: sizes and the generator's seed."""

    num_watchers: int
    num_movies: int
    num_types: int
    seed: int | None


@dataclass(frozen=True)
class TrainingConfig:
    """How a version was trained; preset is "default" or "notebook"."""

    preset: str
    embedding_dim: int
    hidden_units: int
    epochs: int
    batch_size: int
    learning_rate: float
    validation_fraction: float
    embedding_initializer: str
    embedding_l2: float
    early_stopping_patience: int
    learning_rate_schedule: str


@dataclass(frozen=True)
class ModelInfo:
    """A stored model version."""

    ref: ModelRef
    create_time: datetime
    synthetic: SyntheticData
    training: TrainingConfig
    metrics: Mapping[str, float]
    num_movies: int
    embedding_dim: int
    state: str
    age_mean: float
    age_std: float
    history: tuple[TrainProgress, ...] = ()

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> int:
        return self.ref.version


@dataclass(frozen=True)
class TrainProgress:
    """The end of one training epoch; losses in nats per movie (val_loss None without a split)."""

    epoch: int
    epochs: int
    loss: float
    val_loss: float | None
    elapsed_seconds: float


@dataclass(frozen=True)
class Neighbor:
    """A movie near the query; higher score is nearer for every metric."""

    movie_id: int
    score: float


@dataclass(frozen=True)
class Recommendation:
    """A movie the watcher has not liked, with the probability the model gives it."""

    movie_id: int
    probability: float


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """The model's output for one watcher: a like-probability per movie, and recommendations."""

    probabilities: np.ndarray
    recommendations: tuple[Recommendation, ...] = ()


@dataclass(frozen=True, eq=False)
class ReconstructionBatch:
    """The model's output for many watchers as arrays (from Client.reconstruct_batch)."""

    probabilities: np.ndarray  # (watchers, movies) float32
    recommended_movie_ids: np.ndarray  # (watchers, top_k) int32; -1 pads short rows

    def __len__(self) -> int:
        return len(self.probabilities)

    def __getitem__(self, i: int) -> Reconstruction:
        """Watcher i's output in the form Client.reconstruct gives it."""
        row = self.probabilities[i]
        ids = self.recommended_movie_ids[i]
        return Reconstruction(
            row, tuple(Recommendation(int(m), float(row[m])) for m in ids[ids >= 0])
        )


@dataclass(frozen=True, eq=False)
class Watcher:
    """A watcher to reconstruct: ratings (one per movie, in [0, 1]) or the ids it liked."""

    age_years: float
    education: int
    liked_movie_ids: Sequence[int] = ()
    ratings: np.ndarray | Sequence[float] | None = field(default=None)
