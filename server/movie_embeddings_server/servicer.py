"""The gRPC servicer: validate, convert between protobuf and numpy, delegate; one error table."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

import grpc
import numpy as np
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc

from . import config, errors
from .inference import ServedModel
from .metrics import Metrics
from .store import Store, check_name
from .trainer import Trainer

log = logging.getLogger(__name__)

# Domain error -> status code: the only place this mapping lives on the server.
STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
}

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
METRIC_NAMES = {
    pb.METRIC_UNSPECIFIED: "cosine",
    pb.METRIC_COSINE: "cosine",
    pb.METRIC_DOT: "dot",
    pb.METRIC_EUCLIDEAN: "euclidean",
}


def _abort(context: grpc.ServicerContext, exc: Exception, code: grpc.StatusCode) -> None:
    status = status_pb2.Status(code=code.value[0], message=str(exc))
    if isinstance(exc, errors.InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=exc.description
        )
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status.details.append(detail)
    context.abort_with_status(rpc_status.to_status(status))


@contextlib.contextmanager
def _rpc(
    servicer: MovieEmbeddingServicer, name: str, context: grpc.ServicerContext
) -> Iterator[None]:
    """One call: domain errors become their status codes, anything else INTERNAL (never
    UNKNOWN, never a traceback to the client). The answer's trailing metadata names the
    server (`server-id`: which replica answered). A log line with the code and duration
    for every failed call, and with --access-log for every call (~10 us each)."""
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    context.set_trailing_metadata(servicer.trailing_metadata)
    try:
        yield
    except tuple(STATUS_OF) as exc:
        code = next(c for cls, c in STATUS_OF.items() if isinstance(exc, cls))
        _abort(context, exc, code)
    except GeneratorExit:  # a stream whose caller went away
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception:
        code = grpc.StatusCode.INTERNAL
        log.exception("%s failed", name)  # the traceback stays in the server's log
        context.abort(code, f"{name}: internal error (see the server log)")
    finally:
        seconds = time.perf_counter() - started
        if servicer.access_log or code != grpc.StatusCode.OK:
            log.info("%s %s %.2f ms", name, code.name, seconds * 1000)
        if servicer.metrics:
            servicer.metrics.call(name, code.name, seconds)


def _handler(fn: Callable) -> Callable:
    """Run each call of an RPC method inside `_rpc`."""

    @functools.wraps(fn)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        with _rpc(self, fn.__name__, context):
            return fn(self, request, context)

    @functools.wraps(fn)
    def streaming(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with _rpc(self, fn.__name__, context):
            yield from fn(self, request, context)

    return streaming if inspect.isgeneratorfunction(fn) else unary


def _ref(served: ServedModel) -> pb.ModelRef:
    return pb.ModelRef(name=served.name, version=served.version)


def model_info(served: ServedModel) -> pb.ModelInfo:
    """A stored version's description, from its metadata."""
    meta = served.meta
    training_cfg = pb.TrainingConfig()
    for key, value in meta["training"].items():
        if key in TRAINING_ENUMS:
            value = TRAINING_ENUM_VALUES[key][value]
        setattr(training_cfg, key, value)
    info = pb.ModelInfo(
        ref=_ref(served),
        synthetic=pb.SyntheticData(**meta["synthetic"]),
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


class MovieEmbeddingServicer(pb_grpc.MovieEmbeddingServiceServicer):
    """Thin: each RPC resolves the model, converts the request, calls the domain, converts back."""

    def __init__(
        self,
        store: Store,
        trainer: Trainer,
        limits: config.Limits,
        access_log: bool = False,
        metrics: Metrics | None = None,
        server_id: str = "",
    ) -> None:
        self.store = store
        self.trainer = trainer
        self.limits = limits
        self.access_log = access_log
        self.metrics = metrics
        self.trailing_metadata = (("server-id", server_id),) if server_id else ()

    @_handler
    def Train(
        self, request: pb.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TrainResponse]:
        name = check_name("model_name", request.model_name)
        synthetic = config.resolve_synthetic(_set_fields(request.synthetic), self.limits)
        given = _set_fields(request.training)
        for key, names in TRAINING_ENUMS.items():
            if key in given:
                given[key] = names.get(given[key], f"unknown value {given[key]}")
        spec = config.resolve_training(given, self.limits)
        config.check_split(synthetic, spec)
        job = self.trainer.start(name, synthetic, spec)
        # The callback runs when the call ends (cancelled, deadline passed, or done).
        if not context.add_callback(job.cancel):
            job.cancel()  # ended already
        for event in job:
            if isinstance(event, ServedModel):
                yield pb.TrainResponse(model=model_info(event))
            else:
                yield pb.TrainResponse(progress=pb.TrainProgress(**asdict(event)))

    def _model(self, ref: pb.ModelRef) -> ServedModel:
        return self.store.resolve(ref.name, ref.version)

    @_handler
    def GetMovieVector(
        self, request: pb.GetMovieVectorRequest, context: grpc.ServicerContext
    ) -> pb.GetMovieVectorResponse:
        served = self._model(request.model)
        served.check_movie_id("movie_id", request.movie_id)
        return pb.GetMovieVectorResponse(
            movie_id=request.movie_id, vector=served.rows[request.movie_id], model=_ref(served)
        )

    @_handler
    def BatchGetMovieVectors(
        self, request: pb.BatchGetMovieVectorsRequest, context: grpc.ServicerContext
    ) -> pb.BatchGetMovieVectorsResponse:
        served = self._model(request.model)
        ids = np.asarray(request.movie_ids, dtype=np.int64)
        matrix = served.vectors(ids)
        ids = ids if ids.size else np.arange(served.num_movies)
        return pb.BatchGetMovieVectorsResponse(
            vectors=[
                pb.MovieVector(movie_id=i, vector=row)
                for i, row in zip(ids.tolist(), matrix.tolist(), strict=True)
            ],
            model=_ref(served),
        )

    @_handler
    def NearestMovies(
        self, request: pb.NearestMoviesRequest, context: grpc.ServicerContext
    ) -> pb.NearestMoviesResponse:
        served = self._model(request.model)
        query = request.WhichOneof("query")
        if request.metric not in METRIC_NAMES:
            raise errors.InvalidArgument("metric", f"unknown metric value {request.metric}")
        ids, scores = served.nearest(
            movie_id=request.movie_id if query == "movie_id" else None,
            vector=np.asarray(request.vector.values, dtype=np.float32)
            if query == "vector"
            else None,
            k=request.k or 10,
            metric=METRIC_NAMES[request.metric],
            exclude=np.asarray(request.exclude_movie_ids, dtype=np.int64),
        )
        return pb.NearestMoviesResponse(
            neighbors=[pb.Neighbor(movie_id=i, score=s) for i, s in zip(ids, scores, strict=True)],
            model=_ref(served),
        )

    @_handler
    def Reconstruct(
        self, request: pb.ReconstructRequest, context: grpc.ServicerContext
    ) -> pb.ReconstructResponse:
        served = self._model(request.model)
        if request.HasField("batch"):
            return self._reconstruct_batch(served, request)
        ws = request.watchers
        watchers = served.make_watchers(
            [list(w.ratings) for w in ws],
            [list(w.liked_movie_ids) for w in ws],
            [w.age_years for w in ws],
            [w.education for w in ws],
        )
        probabilities, recommended = served.reconstruct(watchers, request.top_k)
        rows = probabilities.tolist()  # Python floats fill protobuf fields fastest
        return pb.ReconstructResponse(
            reconstructions=[
                pb.Reconstruction(
                    probabilities=row,
                    recommendations=[
                        pb.Recommendation(movie_id=m, probability=row[m])
                        for m in (recommended[i].tolist() if recommended else ())
                    ],
                )
                for i, row in enumerate(rows)
            ],
            model=_ref(served),
        )

    @staticmethod
    def _reconstruct_batch(
        served: ServedModel, request: pb.ReconstructRequest
    ) -> pb.ReconstructResponse:
        """The dense form: arrays in, arrays out, with no per-value protobuf work."""
        if request.watchers:
            raise errors.InvalidArgument("batch", "set watchers or batch, not both")
        batch = request.batch
        if len(batch.ratings) % 4:
            raise errors.InvalidArgument("batch.ratings", "must be whole float32 values (4 bytes)")
        watchers = served.dense_watchers(
            np.frombuffer(batch.ratings, dtype="<f4"),
            np.asarray(batch.age_years, dtype=np.float32),
            np.asarray(batch.education, dtype=np.int64),
        )
        probabilities, recommended = served.reconstruct(watchers, request.top_k)
        ids = np.full((len(probabilities), request.top_k), -1, dtype="<i4")
        for row, chosen in zip(ids, recommended, strict=True) if recommended else ():
            row[: len(chosen)] = chosen
        return pb.ReconstructResponse(
            batch=pb.ReconstructionBatch(
                probabilities=probabilities.astype("<f4").tobytes(),
                recommended_movie_ids=ids.tobytes(),
            ),
            model=_ref(served),
        )

    @_handler
    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[model_info(s) for s in self.store.list(request.name)])

    @_handler
    def GetModel(
        self, request: pb.GetModelRequest, context: grpc.ServicerContext
    ) -> pb.GetModelResponse:
        return pb.GetModelResponse(model=model_info(self._model(request.model)))
