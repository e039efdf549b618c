"""The SDK clients: `Client` (blocking) and `AsyncClient` (asyncio), with the same methods,
arguments and return types; what each call sends and reads lives once, in _calls.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar, Unpack

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2_grpc

from . import _calls as calls
from . import _convert as convert
from .errors import InvalidArgument, from_rpc_error
from .types import (
    DatasetInfo,
    DatasetRef,
    ModelInfo,
    ModelRef,
    Movie,
    MovieVectors,
    Neighbor,
    Recommendation,
    Reconstruction,
    ReconstructionBatch,
    TrainProgress,
    Watcher,
)
from .v1 import movie_embeddings_pb2_grpc as pb_grpc

T = TypeVar("T")
DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0  # seconds, for every call but Train
# A method's `timeout` when not given: the client's. Distinct from None, which means no
# deadline at all.
_UNSET: Any = object()


def _taking(info: ModelInfo, age_years: float | None, education: int | None) -> ModelRef:
    """The version `info` describes, when it can do without the features left out (None):
    one trained with watchers' ages or education levels needs them. The version, not the
    ref asked for: the check and the query must meet the same version, whatever is newest."""
    for name, given, needed in (
        ("age_years", age_years, info.has_age),
        ("education", education, info.has_education),
    ):
        if given is None and needed:
            why = f"must be given: model {info.name} v{info.version} was trained with it"
            code = grpc.StatusCode.INVALID_ARGUMENT
            raise InvalidArgument(f"{name}: {why}", code, [(name, why)])
    return info.ref


class _Connection:
    """The channel, stub, metadata and default deadline both clients share; `_grpc` is the
    module that opens the channel (grpc, or grpc.aio for AsyncClient)."""

    _grpc: Any = grpc

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
        max_message_bytes: int | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = calls.open_channel(
            self._grpc,
            target,
            tls,
            root_certificates,
            certificate_chain,
            private_key,
            max_message_bytes,
        )
        self._metadata = calls.bearer(token)
        self._stub = pb_grpc.MovieEmbeddingServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _method(self, call: calls.Call[Any]) -> Any:
        return getattr(self._health if call.health else self._stub, call.method)

    def _deadline(self, timeout: Any) -> float | None:
        return self.timeout if timeout is _UNSET else timeout


class Client(_Connection):
    """A connection to a movie-embeddings server; use it as a context manager.

    `timeout` is the deadline in seconds of each query (None = no deadline); each
    method also takes `timeout=` to override it for one call. Reads are retried on
    UNAVAILABLE with backoff within that deadline; Train never is. Failed calls raise
    subclasses of `movie_embeddings.MovieEmbeddingsError`.

    `token` is sent as `authorization: Bearer <token>` on every call. TLS is on when `tls`
    is true or any certificate is given: `root_certificates` (PEM) to trust the server's
    (None: the system's roots), `certificate_chain` and `private_key` (PEM) for mutual TLS.

    `max_message_bytes` caps one message each way (None: gRPC's defaults, 4 MiB received).
    Whole catalogues need no more: they arrive as a stream of ~1 MiB pages.
    """

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _run(self, call: calls.Call[T], timeout: Any) -> T:
        try:
            response = self._method(call)(
                call.request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return call.read(response)

    def train(
        self,
        model: str = "default",
        *,
        timeout: float | None = None,
        **settings: Unpack[calls.TrainSettings],
    ) -> Iterator[TrainProgress | ModelInfo]:
        """Train a new version of `model`: yields TrainProgress events (one per epoch, and
        `step`s inside a long epoch), then its ModelInfo.

        `settings` (num_watchers, seed, preset, epochs, learning_rate, ...: see TrainSettings)
        left out or None take the server's defaults; `dataset="name"` trains on a stored
        dataset instead of synthetic data. Stopping the iteration early (or
        `timeout` seconds passing; default: no deadline) cancels the training.
        """
        request = convert.train_request(model, settings)
        yield from self._stream("Train", request, timeout, convert.train_event)

    def _stream(
        self, method: str, request: Any, timeout: float | None, read: Callable[[Any], T]
    ) -> Iterator[T]:
        """A server-streaming call's answers, read one by one."""
        stream = getattr(self._stub, method)(request, timeout=timeout, metadata=self._metadata)
        try:
            for response in stream:
                yield read(response)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            stream.cancel()  # no-op when finished; stops the work when the caller stops early

    def movie_vector(
        self, movie_id: int, *, model: convert.ModelArg = None, timeout: Any = _UNSET
    ) -> np.ndarray:
        """The vector of one movie (float32, embedding_dim values)."""
        return self._run(calls.movie_vector(movie_id, model), timeout)

    def movie_vectors(
        self,
        movie_ids: Sequence[int] | None = None,
        *,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, matrix) for the given movies, or for all movies when `movie_ids` is None/empty;
        a catalogue of any size (read as movie_table does)."""
        table = self.movie_table(movie_ids, model=model, timeout=timeout)
        return table.movie_ids, table.vectors

    def iter_movie_vectors(
        self,
        movie_ids: Sequence[int] | None = None,
        *,
        model: convert.ModelArg = None,
        page_size: int = 0,
        timeout: Any = _UNSET,
    ) -> Iterator[MovieVectors]:
        """Pages of movies' vectors with titles, genres and like counts, in the order asked
        (all movies in catalogue order when `movie_ids` is None/empty); `page_size` movies a
        page, 0 = the server's ~1 MiB pages. `timeout` bounds the whole stream."""
        request = calls.stream_movie_vectors(movie_ids, model, page_size)
        yield from self._stream(
            "StreamMovieVectors", request, self._deadline(timeout), convert.movie_vectors_page
        )

    def movie_table(
        self,
        movie_ids: Sequence[int] | None = None,
        *,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> MovieVectors:
        """iter_movie_vectors' pages as one MovieVectors: ids, titles, genres, like counts and
        one (movies x embedding_dim) float32 matrix."""
        pages = self.iter_movie_vectors(movie_ids, model=model, timeout=timeout)
        return convert.joined(list(pages))

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
        **filters: Unpack[calls.Filters],
    ) -> list[Neighbor]:
        """The k movies nearest to `movie_id` (never itself) or to `vector`, best first.

        `min_likes`, `genres` and `exclude_genres` filter the movies before the k are taken
        (k come back whenever k pass); left out, a model trained on a dataset leaves its
        rarely liked movies out (min_likes 10, or a tenth of its most liked movie's likes when
        less); `min_likes=0` keeps them."""
        call = calls.nearest_movies(movie_id, vector, k, metric, exclude, model, filters)
        return self._run(call, timeout)

    def reconstruct(
        self,
        liked_movie_ids: Sequence[int] = (),
        *,
        ratings: np.ndarray | Sequence[float] | None = None,
        age_years: float | None = None,
        education: int | None = None,
        top_k: int = 0,
        probabilities: bool = True,
        because: bool = False,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
        **filters: Unpack[calls.Filters],
    ) -> Reconstruction:
        """The model's output for one watcher, with its `top_k` best movies not yet liked.
        `probabilities=False` asks for the recommendations alone (top_k > 0): an answer of a
        few hundred bytes whatever the catalogue's size, its `probabilities` empty.
        `because=True` gives each recommendation the (up to) 3 liked movies nearest to it
        (`because_movie_ids`, `because_titles`). `min_likes`, `genres` and `exclude_genres`
        filter the recommendations before the top_k are taken (see nearest_movies; here no
        movie is left out unless asked).

        `age_years` and `education` may be left out (None) for a model trained without them
        (a dataset's without watcher features): the model is then looked up first (one
        GetModel), and one trained with them raises InvalidArgument naming the feature."""
        if age_years is None or education is None:
            info = self.get_model(model, timeout=timeout)
            model = _taking(info, age_years, education)
        watcher = Watcher(age_years or 0.0, education or 0, liked_movie_ids, ratings)
        call = calls.reconstruct(watcher, top_k, model, probabilities, filters, because)
        return self._run(call, timeout)

    def recommend(
        self,
        watcher_id: int,
        *,
        top_k: int = 10,
        because: bool = False,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
        **filters: Unpack[calls.Filters],
    ) -> list[Recommendation]:
        """The `top_k` best movies for a watcher of the model's dataset, named by its id there
        (its likes and features are the dataset's; the movies it liked never come back).
        NotFound for a watcher the model did not keep; InvalidArgument on a model trained on
        synthetic data. `because` and the filters as in `reconstruct`."""
        call = calls.recommend(watcher_id, top_k, model, filters, because)
        return self._run(call, timeout)

    def reconstruct_many(
        self,
        watchers: Sequence[Watcher],
        *,
        top_k: int = 0,
        probabilities: bool = True,
        because: bool = False,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
        **filters: Unpack[calls.Filters],
    ) -> list[Reconstruction]:
        """The model's output for several watchers in one call, in order (`probabilities`,
        `because` and the filters as in `reconstruct`)."""
        call = calls.reconstruct_many(watchers, top_k, model, probabilities, filters, because)
        return self._run(call, timeout)

    def reconstruct_batch(
        self,
        ratings: np.ndarray,
        *,
        age_years: Sequence[float] | np.ndarray,
        education: Sequence[int] | np.ndarray,
        top_k: int = 0,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
        **filters: Unpack[calls.Filters],
    ) -> ReconstructionBatch:
        """The model's output for many watchers, as arrays in and out (the fastest form).

        `ratings` is (watchers, movies) in [0, 1]; one age and education per watcher; the
        filters as in `reconstruct`.
        """
        call = calls.reconstruct_batch(ratings, age_years, education, top_k, model, filters)
        return self._run(call, timeout)

    def list_models(self, name: str | None = None, *, timeout: Any = _UNSET) -> list[ModelInfo]:
        """Every stored version (of one model when `name` is given)."""
        return self._run(calls.list_models(name), timeout)

    def get_model(self, model: convert.ModelArg = None, *, timeout: Any = _UNSET) -> ModelInfo:
        """One version; None = the newest version of "default"."""
        return self._run(calls.get_model(model), timeout)

    def delete_model(
        self, model: str | ModelRef, version: int = 0, *, timeout: Any = _UNSET
    ) -> list[ModelInfo]:
        """Delete one version of a model (`version`, or a ModelRef's), or every version
        (version 0); returns those deleted. A labelled version is refused (FailedPrecondition)
        until its label is removed; calls already running on it finish on it. Never retried."""
        return self._run(calls.delete_model(model, version), timeout)

    def set_model_label(
        self, name: str, label: str, version: int, *, timeout: Any = _UNSET
    ) -> dict[str, int]:
        """Point `label` (e.g. "stable") of model `name` at `version`, or remove it with
        version 0; returns every label of the model and its version. Queries then name it
        as ModelRef(name, label=label). Never retried."""
        return self._run(calls.set_model_label(name, label, version), timeout)

    def health(self, service: str = "", *, timeout: Any = _UNSET) -> str:
        """The server's health (grpc.health.v1): "SERVING", "NOT_SERVING", ...; `service`
        "" is the whole server, "movie_embeddings.v1.MovieEmbeddingService" the service."""
        return self._run(calls.health(service), timeout)

    def search_movies(
        self,
        query: str,
        *,
        limit: int = 10,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> list[Movie]:
        """Movies of a model's catalogue whose titles hold every word of `query` (any case,
        accents or not), most-liked first."""
        return self._run(calls.search_movies(query, limit, model), timeout)

    def import_dataset(
        self,
        name: str,
        ratings: Any,
        *,
        watchers: Any = None,
        movies: Any = None,
        description: str = "",
        chunk_rows: int = 100_000,
        progress: calls.ImportProgress | None = None,
        timeout: float | None = None,
    ) -> DatasetInfo:
        """Store ratings (and the catalogue and watcher features) as the next version of
        dataset `name`; the server checks everything before storing anything.

        Each table is a RatingColumns / MovieColumns / WatcherColumns, or anything with
        those columns (a dict of arrays, a pandas DataFrame with watcher_id, movie_id,
        rating[, timestamp]; movie_id, title, genres; watcher_id, age_years, education);
        `ratings` may be a DatasetColumns (from movie_embeddings.datasets), which brings its
        movies and watchers. Rows travel in chunks of `chunk_rows`; `progress(rows_sent,
        total_rows)` is called after each (from gRPC's sending thread). Never retried;
        `timeout` default: no deadline.
        """
        call = calls.import_dataset(
            name, ratings, watchers, movies, description, chunk_rows, progress
        )
        return self._run(call, timeout)

    def list_datasets(self, name: str | None = None, *, timeout: Any = _UNSET) -> list[DatasetInfo]:
        """Every stored dataset version (of one dataset when `name` is given)."""
        return self._run(calls.list_datasets(name), timeout)

    def get_dataset(
        self, name: str | DatasetRef, version: int = 0, *, timeout: Any = _UNSET
    ) -> DatasetInfo:
        """One dataset version; version 0 = the newest."""
        return self._run(calls.get_dataset(name, version), timeout)

    def delete_dataset(
        self, name: str | DatasetRef, version: int = 0, *, timeout: Any = _UNSET
    ) -> list[DatasetInfo]:
        """Delete one version (0 = every version) of a dataset; returns those deleted.
        Models trained on it keep working."""
        return self._run(calls.delete_dataset(name, version), timeout)


class AsyncClient(_Connection):
    """`Client` for asyncio (grpc.aio): the same arguments, methods and values, awaited;
    `train` is an async iterator. Use it as an async context manager, in one event loop."""

    _grpc = grpc.aio

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _run(self, call: calls.Call[T], timeout: Any) -> T:
        try:
            response = await self._method(call)(
                call.request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return call.read(response)

    async def train(
        self,
        model: str = "default",
        *,
        timeout: float | None = None,
        **settings: Unpack[calls.TrainSettings],
    ) -> AsyncIterator[TrainProgress | ModelInfo]:
        """As Client.train; leaving the `async for` early cancels the training."""
        request = convert.train_request(model, settings)
        async for event in self._stream("Train", request, timeout, convert.train_event):
            yield event

    async def _stream(
        self, method: str, request: Any, timeout: float | None, read: Callable[[Any], T]
    ) -> AsyncIterator[T]:
        """As Client._stream."""
        stream = getattr(self._stub, method)(request, timeout=timeout, metadata=self._metadata)
        try:
            async for response in stream:
                yield read(response)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            stream.cancel()

    async def movie_vector(
        self, movie_id: int, *, model: convert.ModelArg = None, timeout: Any = _UNSET
    ) -> np.ndarray:
        """As Client.movie_vector."""
        return await self._run(calls.movie_vector(movie_id, model), timeout)

    async def movie_vectors(
        self,
        movie_ids: Sequence[int] | None = None,
        *,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> tuple[np.ndarray, np.ndarray]:
        """As Client.movie_vectors."""
        table = await self.movie_table(movie_ids, model=model, timeout=timeout)
        return table.movie_ids, table.vectors

    async def iter_movie_vectors(
        self,
        movie_ids: Sequence[int] | None = None,
        *,
        model: convert.ModelArg = None,
        page_size: int = 0,
        timeout: Any = _UNSET,
    ) -> AsyncIterator[MovieVectors]:
        """As Client.iter_movie_vectors."""
        request = calls.stream_movie_vectors(movie_ids, model, page_size)
        async for page in self._stream(
            "StreamMovieVectors", request, self._deadline(timeout), convert.movie_vectors_page
        ):
            yield page

    async def movie_table(
        self,
        movie_ids: Sequence[int] | None = None,
        *,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> MovieVectors:
        """As Client.movie_table."""
        pages = self.iter_movie_vectors(movie_ids, model=model, timeout=timeout)
        return convert.joined([page async for page in pages])

    async def nearest_movies(
        self,
        movie_id: int | None = None,
        *,
        vector: np.ndarray | Sequence[float] | None = None,
        k: int = 10,
        metric: str = "cosine",
        exclude: Sequence[int] = (),
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
        **filters: Unpack[calls.Filters],
    ) -> list[Neighbor]:
        """As Client.nearest_movies."""
        call = calls.nearest_movies(movie_id, vector, k, metric, exclude, model, filters)
        return await self._run(call, timeout)

    async def reconstruct(
        self,
        liked_movie_ids: Sequence[int] = (),
        *,
        ratings: np.ndarray | Sequence[float] | None = None,
        age_years: float | None = None,
        education: int | None = None,
        top_k: int = 0,
        probabilities: bool = True,
        because: bool = False,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
        **filters: Unpack[calls.Filters],
    ) -> Reconstruction:
        """As Client.reconstruct."""
        if age_years is None or education is None:
            info = await self.get_model(model, timeout=timeout)
            model = _taking(info, age_years, education)
        watcher = Watcher(age_years or 0.0, education or 0, liked_movie_ids, ratings)
        call = calls.reconstruct(watcher, top_k, model, probabilities, filters, because)
        return await self._run(call, timeout)

    async def recommend(
        self,
        watcher_id: int,
        *,
        top_k: int = 10,
        because: bool = False,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
        **filters: Unpack[calls.Filters],
    ) -> list[Recommendation]:
        """As Client.recommend."""
        call = calls.recommend(watcher_id, top_k, model, filters, because)
        return await self._run(call, timeout)

    async def reconstruct_many(
        self,
        watchers: Sequence[Watcher],
        *,
        top_k: int = 0,
        probabilities: bool = True,
        because: bool = False,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
        **filters: Unpack[calls.Filters],
    ) -> list[Reconstruction]:
        """As Client.reconstruct_many."""
        call = calls.reconstruct_many(watchers, top_k, model, probabilities, filters, because)
        return await self._run(call, timeout)

    async def reconstruct_batch(
        self,
        ratings: np.ndarray,
        *,
        age_years: Sequence[float] | np.ndarray,
        education: Sequence[int] | np.ndarray,
        top_k: int = 0,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
        **filters: Unpack[calls.Filters],
    ) -> ReconstructionBatch:
        """As Client.reconstruct_batch."""
        call = calls.reconstruct_batch(ratings, age_years, education, top_k, model, filters)
        return await self._run(call, timeout)

    async def list_models(
        self, name: str | None = None, *, timeout: Any = _UNSET
    ) -> list[ModelInfo]:
        """As Client.list_models."""
        return await self._run(calls.list_models(name), timeout)

    async def get_model(
        self, model: convert.ModelArg = None, *, timeout: Any = _UNSET
    ) -> ModelInfo:
        """As Client.get_model."""
        return await self._run(calls.get_model(model), timeout)

    async def delete_model(
        self, model: str | ModelRef, version: int = 0, *, timeout: Any = _UNSET
    ) -> list[ModelInfo]:
        """As Client.delete_model."""
        return await self._run(calls.delete_model(model, version), timeout)

    async def set_model_label(
        self, name: str, label: str, version: int, *, timeout: Any = _UNSET
    ) -> dict[str, int]:
        """As Client.set_model_label."""
        return await self._run(calls.set_model_label(name, label, version), timeout)

    async def health(self, service: str = "", *, timeout: Any = _UNSET) -> str:
        """As Client.health."""
        return await self._run(calls.health(service), timeout)

    async def search_movies(
        self,
        query: str,
        *,
        limit: int = 10,
        model: convert.ModelArg = None,
        timeout: Any = _UNSET,
    ) -> list[Movie]:
        """As Client.search_movies."""
        return await self._run(calls.search_movies(query, limit, model), timeout)

    async def import_dataset(
        self,
        name: str,
        ratings: Any,
        *,
        watchers: Any = None,
        movies: Any = None,
        description: str = "",
        chunk_rows: int = 100_000,
        progress: calls.ImportProgress | None = None,
        timeout: float | None = None,
    ) -> DatasetInfo:
        """As Client.import_dataset; `progress` is called in the event loop."""
        call = calls.import_dataset(
            name, ratings, watchers, movies, description, chunk_rows, progress
        )
        return await self._run(call, timeout)

    async def list_datasets(
        self, name: str | None = None, *, timeout: Any = _UNSET
    ) -> list[DatasetInfo]:
        """As Client.list_datasets."""
        return await self._run(calls.list_datasets(name), timeout)

    async def get_dataset(
        self, name: str | DatasetRef, version: int = 0, *, timeout: Any = _UNSET
    ) -> DatasetInfo:
        """As Client.get_dataset."""
        return await self._run(calls.get_dataset(name, version), timeout)

    async def delete_dataset(
        self, name: str | DatasetRef, version: int = 0, *, timeout: Any = _UNSET
    ) -> list[DatasetInfo]:
        """As Client.delete_dataset."""
        return await self._run(calls.delete_dataset(name, version), timeout)
