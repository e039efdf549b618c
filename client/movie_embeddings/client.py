"""The synchronous SDK client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np

from . import _convert as convert
from .errors import from_rpc_error
from .types import (
    ModelInfo,
    Neighbor,
    Reconstruction,
    ReconstructionBatch,
    TrainProgress,
    Watcher,
)
from .v1 import movie_embeddings_pb2 as pb
from .v1 import movie_embeddings_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0  # seconds, for every call but Train
_UNSET: Any = object()


class Client:
    """A connection to a movie-embeddings server; use it as a context manager.

    `timeout` is the deadline in seconds of each query (None = no deadline); each
    method also takes `timeout=` to override it for one call. Failed calls raise
    subclasses of `movie_embeddings.MovieEmbeddingsError`.

    `token` is sent as `authorization: Bearer <token>` on every call. TLS is on when `tls`
    is true or any certificate is given: `root_certificates` (PEM) to trust the server's
    (None: the system's roots), `certificate_chain` and `private_key` (PEM) for mutual TLS.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
    ):
        self.target = target
        self.timeout = timeout
        if tls or root_certificates or certificate_chain:
            credentials = grpc.ssl_channel_credentials(
                root_certificates, private_key, certificate_chain
            )
            self._channel = grpc.secure_channel(target, credentials)
        else:
            self._channel = grpc.insecure_channel(target)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._stub = pb_grpc.MovieEmbeddingServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any, timeout: Any) -> Any:
        try:
            return getattr(self._stub, method)(
                request,
                timeout=self.timeout if timeout is _UNSET else timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def train(
        self,
        model: str = "default",
        *,
        num_watchers: int | None = None,
        num_movies: int | None = None,
        num_types: int | None = None,
        seed: int | None = None,
        preset: str | None = None,
        embedding_dim: int | None = None,
        hidden_units: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        validation_fraction: float | None = None,
        embedding_initializer: str | None = None,
        embedding_l2: float | None = None,
        early_stopping_patience: int | None = None,
        learning_rate_schedule: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[TrainProgress | ModelInfo]:
        """Train a new version of `model`: yields a TrainProgress per epoch, then its ModelInfo.

        None means the server's default: the preset's ("default" unless
        `preset="notebook"`, the notebook's settings exactly). Stopping the iteration
        early (or `timeout` seconds passing) cancels the training.
        """
        request = convert.train_request(
            model,
            {
                "num_watchers": num_watchers,
                "num_movies": num_movies,
                "num_types": num_types,
                "seed": seed,
            },
            {
                "preset": preset,
                "embedding_dim": embedding_dim,
                "hidden_units": hidden_units,
                "epochs": epochs,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "validation_fraction": validation_fraction,
                "embedding_initializer": embedding_initializer,
                "embedding_l2": embedding_l2,
                "early_stopping_patience": early_stopping_patience,
                "learning_rate_schedule": learning_rate_schedule,
            },
        )
        stream = self._stub.Train(request, timeout=timeout, metadata=self._metadata)
        try:
            for response in stream:
                yield convert.train_event(response)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            stream.cancel()  # no-op when finished; stops the training when the caller stops early

    def movie_vector(
        self, movie_id: int, *, model: convert.ModelArg = None, timeout: Any = _UNSET
    ) -> np.ndarray:
        """The vector of one movie (float32, embedding_dim values)."""
        request = pb.GetMovieVectorRequest(model=convert.model_ref(model), movie_id=movie_id)
        return convert.vector(self._call("GetMovieVector", request, timeout).vector)

    def movie_vectors(
        self,
        movie_ids: Sequence[int] | None = None,
        *,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, matrix) for the given movies, or for all movies when `movie_ids` is None/empty."""
        request = pb.BatchGetMovieVectorsRequest(
            model=convert.model_ref(model), movie_ids=list(movie_ids or ())
        )
        response = self._call("BatchGetMovieVectors", request, timeout)
        ids = np.array([v.movie_id for v in response.vectors], dtype=np.int64)
        matrix = np.array([v.vector for v in response.vectors], dtype=np.float32)
        return ids, matrix.reshape(len(ids), -1)

    def nearest_movies(
        self,
        movie_id: int | None = None,
        *,
        vector: np.ndarray | Sequence[float] | None = None,
        k: int = 10,
        metric: str = "cosine",
        exclude: Sequence[int] = (),
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> list[Neighbor]:
        """The k movies nearest to `movie_id` (never itself) or to `vector`, best first."""
        request = convert.nearest_request(model, movie_id, vector, k, metric, exclude)
        return convert.neighbors(self._call("NearestMovies", request, timeout))

    def reconstruct(
        self,
        liked_movie_ids: Sequence[int] = (),
        *,
        ratings: np.ndarray | Sequence[float] | None = None,
        age_years: float,
        education: int,
        top_k: int = 0,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> Reconstruction:
        """The model's output for one watcher, with its `top_k` best movies not yet liked."""
        watcher = Watcher(age_years, education, liked_movie_ids, ratings)
        return self.reconstruct_many([watcher], top_k=top_k, model=model, timeout=timeout)[0]

    def reconstruct_many(
        self,
        watchers: Sequence[Watcher],
        *,
        top_k: int = 0,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> list[Reconstruction]:
        """The model's output for several watchers in one call, in order."""
        request = pb.ReconstructRequest(
            model=convert.model_ref(model),
            watchers=[convert.watcher(w) for w in watchers],
            top_k=top_k,
        )
        response = self._call("Reconstruct", request, timeout)
        return [convert.reconstruction(r) for r in response.reconstructions]

    def reconstruct_batch(
        self,
        ratings: np.ndarray,
        *,
        age_years: Sequence[float] | np.ndarray,
        education: Sequence[int] | np.ndarray,
        top_k: int = 0,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> ReconstructionBatch:
        """The model's output for many watchers, as arrays in and out (the fastest form).

        `ratings` is (watchers, movies) in [0, 1]; one age and education per watcher.
        """
        request = convert.batch_request(model, ratings, age_years, education, top_k)
        response = self._call("Reconstruct", request, timeout)
        return convert.reconstruction_batch(response.batch, len(request.batch.age_years), top_k)

    def list_models(self, name: str | None = None, *, timeout: Any = _UNSET) -> list[ModelInfo]:
        """Every stored version (of one model when `name` is given)."""
        response = self._call("ListModels", pb.ListModelsRequest(name=name or ""), timeout)
        return [convert.model_info(m) for m in response.models]

    def get_model(self, model: convert.ModelArg = None, *, timeout: Any = _UNSET) -> ModelInfo:
        """One version; None = the newest version of "default"."""
        request = pb.GetModelRequest(model=convert.model_ref(model))
        return convert.model_info(self._call("GetModel", request, timeout).model)
