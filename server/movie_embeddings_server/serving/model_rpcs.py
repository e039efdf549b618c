"""The RPCs of model versions (Train, ListModels, GetModel, DeleteModel, SetModelLabel) of the
servicer, and a version's ModelInfo."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

import grpc

from movie_embeddings.v1 import movie_embeddings_pb2 as pb

from .. import config, errors
from ..model.inference import ServedModel
from ..store.datasets import DatasetStore
from ..store.models import Store, check_name
from .dataset_rpcs import dataset_info
from .rpc import handler
from .trainer import Trainer

# TrainingConfig's enum fields: wire value <-> the name the domain uses.
TRAINING_ENUMS: dict[str, dict[int, str]] = {
    "preset": {pb.PRESET_DEFAULT: "default", pb.PRESET_NOTEBOOK: "notebook"},
    "learning_rate_schedule": {
        pb.LEARNING_RATE_SCHEDULE_CONSTANT: "constant",
        pb.LEARNING_RATE_SCHEDULE_COSINE: "cosine",
    },
}
TRAINING_ENUM_VALUES = {
    key: {name: value for value, name in names.items()} for key, names in TRAINING_ENUMS.items()
}


def ref_of(served: ServedModel) -> pb.ModelRef:
    return pb.ModelRef(name=served.name, version=served.version)


def model_info(served: ServedModel) -> pb.ModelInfo:
    """A stored version's description, from its metadata."""
    meta = served.meta
    training_cfg = pb.TrainingConfig()
    for key, value in meta["training"].items():
        if key in TRAINING_ENUMS:
            value = TRAINING_ENUM_VALUES[key][value]
        setattr(training_cfg, key, value)
    trained_on = meta.get("dataset")  # unset for synthetic data
    info = pb.ModelInfo(
        ref=ref_of(served),
        synthetic=None if trained_on else pb.SyntheticData(**meta["synthetic"]),
        dataset=pb.DatasetTraining(**trained_on) if trained_on else None,
        dataset_info=dataset_info(meta["dataset_info"]) if trained_on else None,
        num_train_watchers=meta.get("num_train_watchers", 0),
        num_heldout_watchers=meta.get("num_heldout_watchers", 0),
        has_age=served.has_age,
        has_education=served.has_education,
        training=training_cfg,
        metrics=meta.get("metrics", {}),
        num_movies=served.num_movies,
        embedding_dim=served.embedding_dim,
        state=pb.MODEL_STATE_READY,
        age_mean=served.age_mean,
        age_std=served.age_std,
        history=[pb.TrainProgress(**epoch) for epoch in meta["history"]],
    )
    info.create_time.FromDatetime(datetime.fromisoformat(meta["create_time"]))
    return info


def _set_fields(message: Any) -> dict[str, Any]:
    """The fields the caller set: non-zero ones, and `optional` ones when present (even 0)."""
    out = {}
    for f in message.DESCRIPTOR.fields:
        value = getattr(message, f.name)
        if message.HasField(f.name) if f.has_presence else value:
            # A float field holds 0.005 as 0.004999999888; keep the digits the caller wrote.
            out[f.name] = float(f"{value:.7g}") if f.type == f.TYPE_FLOAT else value
    return out


class ModelRpcs:
    """Mixed into the servicer, which sets these attributes."""

    store: Store
    datasets: DatasetStore
    trainer: Trainer
    limits: config.Limits
    max_dataset_ratings: int

    def _model(self, ref: pb.ModelRef) -> ServedModel:
        return self.store.resolve(ref.name, ref.version, label=ref.label)

    def _described(self, served: ServedModel) -> pb.ModelInfo:
        """A version's ModelInfo with the labels that name it now."""
        info = model_info(served)
        info.labels.extend(self.store.labels_of(served))
        return info

    @handler
    def Train(
        self, request: pb.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TrainResponse]:
        name = check_name("model_name", request.model_name)
        given = _set_fields(request.training)
        for key, names in TRAINING_ENUMS.items():
            if key in given:
                given[key] = names.get(given[key], f"unknown value {given[key]}")
        source: config.SyntheticSpec | config.DatasetTrainingSpec
        if request.HasField("dataset"):
            if request.HasField("synthetic"):
                raise errors.InvalidArgument("dataset", "set synthetic or dataset, not both")
            source = self._dataset_training(request.dataset)
            spec = config.resolve_training(given, self.limits, "dataset")
        else:
            source = config.resolve_synthetic(_set_fields(request.synthetic), self.limits)
            spec = config.resolve_training(given, self.limits)
            config.check_split(source, spec)
        job = self.trainer.start(name, source, spec)
        # The callback runs when the call ends (cancelled, deadline passed, or done).
        if not context.add_callback(job.cancel):
            job.cancel()  # ended already
        for event in job:
            if isinstance(event, ServedModel):
                yield pb.TrainResponse(model=model_info(event))
            else:
                yield pb.TrainResponse(progress=pb.TrainProgress(**asdict(event)))

    def _dataset_training(self, request: pb.DatasetTraining) -> config.DatasetTrainingSpec:
        """The settings with the dataset's version resolved (0 = the newest now), so that the
        trainer reads that one; an unknown dataset is NOT_FOUND before any training."""
        given = _set_fields(request) | {"dataset": _set_fields(request.dataset)}
        source = config.resolve_dataset_training(given)
        info = self.datasets.resolve(source.dataset.name, source.dataset.version, "dataset.dataset")
        if info["num_ratings"] > self.max_dataset_ratings:
            raise errors.ResourceExhausted(
                f"dataset {info['name']!r} v{info['version']} holds {info['num_ratings']} "
                f"ratings, more than the server's cap {self.max_dataset_ratings} "
                "(--max-dataset-ratings)"
            )
        return replace(source, dataset=config.DatasetRef(info["name"], info["version"]))

    @handler
    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[self._described(s) for s in self.store.list(request.name)]
        )

    @handler
    def GetModel(
        self, request: pb.GetModelRequest, context: grpc.ServicerContext
    ) -> pb.GetModelResponse:
        return pb.GetModelResponse(model=self._described(self._model(request.model)))

    @handler
    def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.ServicerContext
    ) -> pb.DeleteModelResponse:
        ref = request.model
        deleted = self.store.delete(ref.name, ref.version, ref.label)
        return pb.DeleteModelResponse(models=[model_info(s) for s in deleted])

    @handler
    def SetModelLabel(
        self, request: pb.SetModelLabelRequest, context: grpc.ServicerContext
    ) -> pb.SetModelLabelResponse:
        labels = self.store.set_label(request.name, request.label, request.version)
        return pb.SetModelLabelResponse(labels=labels)
