"""Every conversion between the SDK's values and the protobuf messages, in one place."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

import numpy as np
import numpy.typing as npt

from .types import (
    DEFAULT_MODEL,
    ModelInfo,
    ModelRef,
    Neighbor,
    Recommendation,
    Reconstruction,
    ReconstructionBatch,
    SyntheticData,
    TrainingConfig,
    TrainProgress,
    Watcher,
)
from .v1 import movie_embeddings_pb2 as pb

PRESETS = {"default": pb.PRESET_DEFAULT, "notebook": pb.PRESET_NOTEBOOK}
SCHEDULES = {
    "constant": pb.LEARNING_RATE_SCHEDULE_CONSTANT,
    "cosine": pb.LEARNING_RATE_SCHEDULE_COSINE,
}
METRICS = {"cosine": pb.METRIC_COSINE, "dot": pb.METRIC_DOT, "euclidean": pb.METRIC_EUCLIDEAN}
_PRESET_NAMES = {v: k for k, v in PRESETS.items()}
_SCHEDULE_NAMES = {v: k for k, v in SCHEDULES.items()}
_STATE_NAMES = {pb.MODEL_STATE_READY: "ready"}

ModelArg = str | ModelRef | None
_SYNTHETIC_FIELDS = tuple(pb.SyntheticData.DESCRIPTOR.fields_by_name)


def model_ref(model: ModelArg) -> pb.ModelRef:
    """None = newest "default"; a string names the newest version of that model."""
    if model is None:
        return pb.ModelRef()
    if isinstance(model, str):
        return pb.ModelRef(name=model)
    return pb.ModelRef(name=model.name, version=model.version)


def from_model_ref(ref: pb.ModelRef) -> ModelRef:
    return ModelRef(name=ref.name or DEFAULT_MODEL, version=ref.version)


def _enum(field: str, names: dict[str, Any], name: str) -> Any:
    if name not in names:
        raise ValueError(f"{field} must be one of {sorted(names)}, got {name!r}")
    return names[name]


def preset(name: str) -> pb.Preset.ValueType:
    return _enum("preset", PRESETS, name)  # type: ignore[no-any-return]


def metric(name: str) -> pb.Metric.ValueType:
    return _enum("metric", METRICS, name)  # type: ignore[no-any-return]


def vector(values: npt.ArrayLike) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _float32(x: float) -> float:
    """A float field's value as written (0.001, not 0.0010000000474974513)."""
    return float(f"{x:.7g}")


def model_info(info: pb.ModelInfo) -> ModelInfo:
    s, t = info.synthetic, info.training
    return ModelInfo(
        ref=from_model_ref(info.ref),
        create_time=info.create_time.ToDatetime(tzinfo=UTC),
        synthetic=SyntheticData(
            num_watchers=s.num_watchers,
            num_movies=s.num_movies,
            num_types=s.num_types,
            seed=s.seed if s.HasField("seed") else None,
        ),
        training=TrainingConfig(
            preset=_PRESET_NAMES.get(t.preset, "default"),
            embedding_dim=t.embedding_dim,
            hidden_units=t.hidden_units,
            epochs=t.epochs,
            batch_size=t.batch_size,
            learning_rate=_float32(t.learning_rate),
            validation_fraction=_float32(t.validation_fraction),
            embedding_initializer=t.embedding_initializer,
            embedding_l2=_float32(t.embedding_l2),
            early_stopping_patience=t.early_stopping_patience,
            learning_rate_schedule=_SCHEDULE_NAMES.get(t.learning_rate_schedule, "unspecified"),
        ),
        metrics=dict(info.metrics),
        num_movies=info.num_movies,
        embedding_dim=info.embedding_dim,
        state=_STATE_NAMES.get(info.state, "unspecified"),
        age_mean=info.age_mean,
        age_std=info.age_std,
        history=tuple(progress(p) for p in info.history),
    )


def progress(p: pb.TrainProgress) -> TrainProgress:
    val_loss = None if math.isnan(p.val_loss) else p.val_loss
    return TrainProgress(p.epoch, p.epochs, p.loss, val_loss, p.elapsed_seconds)


def train_event(response: pb.TrainResponse) -> TrainProgress | ModelInfo:
    if response.WhichOneof("event") == "model":
        return model_info(response.model)
    return progress(response.progress)


def train_request(model: str, settings: Mapping[str, Any]) -> pb.TrainRequest:
    """SyntheticData and TrainingConfig fields in one mapping; None leaves a field unset (the
    server's default); `preset` and `learning_rate_schedule` are names."""
    given = {k: v for k, v in settings.items() if v is not None}
    synthetic = {k: given.pop(k) for k in _SYNTHETIC_FIELDS if k in given}
    if "preset" in given:
        given["preset"] = preset(given["preset"])
    if "learning_rate_schedule" in given:
        given["learning_rate_schedule"] = _enum(
            "learning_rate_schedule", SCHEDULES, given["learning_rate_schedule"]
        )
    return pb.TrainRequest(
        model_name=model,
        synthetic=pb.SyntheticData(**synthetic),
        training=pb.TrainingConfig(**given),
    )


def nearest_request(
    model: ModelArg,
    movie_id: int | None,
    query: np.ndarray | Sequence[float] | None,
    k: int,
    metric_name: str,
    exclude: Sequence[int],
) -> pb.NearestMoviesRequest:
    if (movie_id is None) == (query is None):
        raise ValueError("give exactly one of movie_id or vector")
    request = pb.NearestMoviesRequest(
        model=model_ref(model), k=k, metric=metric(metric_name), exclude_movie_ids=list(exclude)
    )
    if movie_id is not None:
        request.movie_id = movie_id
    else:
        request.vector.values[:] = vector(np.asarray(query)).tolist()
    return request


def neighbors(response: pb.NearestMoviesResponse) -> list[Neighbor]:
    return [Neighbor(n.movie_id, n.score) for n in response.neighbors]


def watcher(w: Watcher) -> pb.Watcher:
    message = pb.Watcher(
        age_years=w.age_years, education=w.education, liked_movie_ids=list(w.liked_movie_ids)
    )
    if w.ratings is not None:
        message.ratings[:] = vector(np.asarray(w.ratings)).tolist()
    return message


def batch_request(
    model: ModelArg,
    ratings: npt.ArrayLike,
    age_years: npt.ArrayLike,
    education: npt.ArrayLike,
    top_k: int,
) -> pb.ReconstructRequest:
    """The dense form: ratings travel as one little-endian float32 byte string."""
    matrix = np.ascontiguousarray(ratings, dtype="<f4")
    if matrix.ndim != 2:
        raise ValueError(f"ratings must be a (watchers, movies) matrix, got shape {matrix.shape}")
    return pb.ReconstructRequest(
        model=model_ref(model),
        top_k=top_k,
        batch=pb.WatcherBatch(
            ratings=matrix.tobytes(),
            age_years=np.asarray(age_years, dtype=np.float32).tolist(),
            education=np.asarray(education, dtype=np.int64).tolist(),
        ),
    )


def reconstruction_batch(batch: pb.ReconstructionBatch, n: int, top_k: int) -> ReconstructionBatch:
    probabilities = np.frombuffer(batch.probabilities, dtype="<f4")
    ids = np.frombuffer(batch.recommended_movie_ids, dtype="<i4")
    return ReconstructionBatch(
        probabilities.astype(np.float32).reshape(n, -1) if n else probabilities.reshape(0, 0),
        ids.astype(np.int32).reshape(n, top_k),
    )


def reconstruction(r: pb.Reconstruction) -> Reconstruction:
    return Reconstruction(
        probabilities=vector(r.probabilities),
        recommendations=tuple(Recommendation(x.movie_id, x.probability) for x in r.recommendations),
    )
