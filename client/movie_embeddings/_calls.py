"""What each SDK method sends and how it reads the answer, shared by Client and AsyncClient,
and the channel both open: TLS or not, and a service config that retries reads."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2

from . import _convert as convert
from .types import (
    DatasetColumns,
    DatasetInfo,
    DatasetRef,
    ModelInfo,
    Movie,
    Neighbor,
    Recommendation,
    Reconstruction,
    ReconstructionBatch,
    Watcher,
)
from .v1 import movie_embeddings_pb2 as pb

T = TypeVar("T")
SERVICE = pb.DESCRIPTOR.services_by_name["MovieEmbeddingService"].full_name
READS = [
    "GetMovieVector",
    "BatchGetMovieVectors",
    "NearestMovies",
    "Reconstruct",
    "ListModels",
    "GetModel",
    "ListDatasets",
    "GetDataset",
    "SearchMovies",
    "StreamMovieVectors",  # retried only before its first page arrives
]

# Reads (never Train, ImportDataset, the deletes or SetModelLabel: they have effects) are
# retried by gRPC itself when the server is UNAVAILABLE (not up yet, restarting, a connection
# lost): up to 4 attempts, backoff 0.1 s doubling to 2 s, all within the call's deadline.
SERVICE_CONFIG = json.dumps(
    {
        # Spread calls over every address of the target (replicas), not only the first.
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": SERVICE, "method": m} for m in READS],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)
CHANNEL_OPTIONS = [("grpc.enable_retries", 1), ("grpc.service_config", SERVICE_CONFIG)]


def grpc_target(target: str) -> tuple[str, str]:
    """gRPC's target for ours, and the host name TLS should check: "HOST:PORT" as it is (a
    DNS name with several addresses gets them all); "HOST1:PORT1,HOST2:PORT2" resolved to
    one `ipv4:` (else `ipv6:`) list of addresses, the form gRPC takes several servers in."""
    if "," not in target:
        return target, ""
    hosts = [part.strip().rpartition(":") for part in target.split(",")]
    for family, scheme, form in (
        (socket.AF_INET, "ipv4", "{}:{}"),
        (socket.AF_INET6, "ipv6", "[{}]:{}"),
    ):
        try:
            found = [
                address
                for host, _, port in hosts
                for *_, address in socket.getaddrinfo(
                    host.strip("[]"), int(port), family, socket.SOCK_STREAM
                )
            ]
        except socket.gaierror:
            continue
        return f"{scheme}:" + ",".join(form.format(*a[:2]) for a in found), hosts[0][0].strip("[]")
    raise ValueError(f"cannot resolve every host of {target!r}")


def open_channel(
    module: Any,
    target: str,
    tls: bool,
    root_certificates: bytes | None,
    certificate_chain: bytes | None,
    private_key: bytes | None,
    max_message_bytes: int | None = None,
) -> Any:
    """A channel from `module` (grpc or grpc.aio) to one or several servers: TLS when asked
    or when a certificate is given; messages up to `max_message_bytes` each way (None:
    gRPC's defaults, 4 MiB received)."""
    address, first_host = grpc_target(target)
    options = list(CHANNEL_OPTIONS)
    if max_message_bytes is not None:
        options += [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
    if tls or root_certificates or certificate_chain:
        if first_host:  # the certificate is checked against a name, not an address list
            options.append(("grpc.ssl_target_name_override", first_host))
        credentials = grpc.ssl_channel_credentials(
            root_certificates, private_key, certificate_chain
        )
        return module.secure_channel(address, credentials, options=options)
    return module.insecure_channel(address, options=options)


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata that carries `token` on every call."""
    return (("authorization", f"Bearer {token}"),) if token else ()


class TrainSettings(TypedDict, total=False):
    """What a Train may set; a missing (or None) one takes the server's default, the preset's
    ("default" unless `preset="notebook"`, the notebook's settings exactly; a dataset's
    defaults differ from synthetic data's).

    `dataset` (a name, or a DatasetRef for one version) trains on a stored dataset, with
    like_threshold ... holdout_fraction and `seed` (the held-out split's); without it the
    data is synthetic: num_watchers, num_movies, num_types and `seed` (the generator's)."""

    dataset: str | DatasetRef | None
    like_threshold: float | None
    min_likes_per_watcher: int | None
    min_likes_per_movie: int | None
    holdout_fraction: float | None
    num_watchers: int | None
    num_movies: int | None
    num_types: int | None
    seed: int | None
    preset: str | None
    embedding_dim: int | None
    hidden_units: int | None
    epochs: int | None
    batch_size: int | None
    learning_rate: float | None
    validation_fraction: float | None
    embedding_initializer: str | None
    embedding_l2: float | None
    early_stopping_patience: int | None
    learning_rate_schedule: str | None
    input_dropout: float | None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One unary call: the RPC, its request, and how its response becomes the SDK's value."""

    method: str
    request: Any
    read: Callable[[Any], T]
    health: bool = False  # a call of grpc.health.v1.Health, not of the service


def health(service: str) -> Call[str]:
    request = health_pb2.HealthCheckRequest(service=service)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name
    return Call("Check", request, lambda r: status(r.status), health=True)


def movie_vector(movie_id: int, model: convert.ModelArg) -> Call[np.ndarray]:
    request = pb.GetMovieVectorRequest(model=convert.model_ref(model), movie_id=movie_id)
    return Call("GetMovieVector", request, lambda r: convert.vector(r.vector))


def stream_movie_vectors(
    movie_ids: Sequence[int] | None, model: convert.ModelArg, page_size: int
) -> pb.StreamMovieVectorsRequest:
    return pb.StreamMovieVectorsRequest(
        model=convert.model_ref(model), movie_ids=list(movie_ids or ()), page_size=page_size
    )


class Filters(TypedDict, total=False):
    """Which movies an answer may hold (gRPC: MovieFilter), applied before its top k: at least
    `min_likes` likes among the model's training watchers (None: the answer's default, which
    for nearest_movies on a dataset model leaves rarely liked movies out; 0: no minimum), one
    of `genres` (any case), none of `exclude_genres`."""

    min_likes: int | None
    genres: Sequence[str]
    exclude_genres: Sequence[str]


def nearest_movies(
    movie_id: int | None,
    vector: np.ndarray | Sequence[float] | None,
    k: int,
    metric: str,
    exclude: Sequence[int],
    model: convert.ModelArg,
    filters: Filters | None = None,
) -> Call[list[Neighbor]]:
    request = convert.nearest_request(model, movie_id, vector, k, metric, exclude)
    convert.set_filter(request, filters or {})
    return Call("NearestMovies", request, convert.neighbors)


def reconstruct_many(
    watchers: Sequence[Watcher],
    top_k: int,
    model: convert.ModelArg,
    probabilities: bool = True,
    filters: Filters | None = None,
    because: bool = False,
) -> Call[list[Reconstruction]]:
    request = pb.ReconstructRequest(
        model=convert.model_ref(model),
        watchers=[convert.watcher(w) for w in watchers],
        top_k=top_k,
        recommendations_only=not probabilities,
        because=because,
    )
    convert.set_filter(request, filters or {})
    return Call(
        "Reconstruct", request, lambda r: [convert.reconstruction(x) for x in r.reconstructions]
    )


def reconstruct(
    watcher: Watcher,
    top_k: int,
    model: convert.ModelArg,
    probabilities: bool = True,
    filters: Filters | None = None,
    because: bool = False,
) -> Call[Reconstruction]:
    many = reconstruct_many([watcher], top_k, model, probabilities, filters, because)
    return Call(many.method, many.request, lambda r: many.read(r)[0])


def recommend(
    watcher_id: int,
    top_k: int,
    model: convert.ModelArg,
    filters: Filters | None = None,
    because: bool = False,
) -> Call[list[Recommendation]]:
    """The top_k recommendations alone for a watcher of the model's dataset, by its id."""
    watcher = Watcher(0.0, 0, watcher_id=watcher_id)
    many = reconstruct_many([watcher], top_k, model, False, filters, because)
    return Call(many.method, many.request, lambda r: list(many.read(r)[0].recommendations))


def reconstruct_batch(
    ratings: np.ndarray,
    age_years: Sequence[float] | np.ndarray,
    education: Sequence[int] | np.ndarray,
    top_k: int,
    model: convert.ModelArg,
    filters: Filters | None = None,
) -> Call[ReconstructionBatch]:
    request = convert.batch_request(model, ratings, age_years, education, top_k)
    convert.set_filter(request, filters or {})
    n = len(request.batch.age_years)
    return Call("Reconstruct", request, lambda r: convert.reconstruction_batch(r.batch, n, top_k))


def list_models(name: str | None) -> Call[list[ModelInfo]]:
    request = pb.ListModelsRequest(name=name or "")
    return Call("ListModels", request, lambda r: [convert.model_info(m) for m in r.models])


def get_model(model: convert.ModelArg) -> Call[ModelInfo]:
    request = pb.GetModelRequest(model=convert.model_ref(model))
    return Call("GetModel", request, lambda r: convert.model_info(r.model))


def delete_model(model: convert.ModelArg, version: int) -> Call[list[ModelInfo]]:
    ref = convert.model_ref(model)
    if version:
        ref.version = version
    request = pb.DeleteModelRequest(model=ref)
    return Call("DeleteModel", request, lambda r: [convert.model_info(m) for m in r.models])


def set_model_label(name: str, label: str, version: int) -> Call[dict[str, int]]:
    request = pb.SetModelLabelRequest(name=name, label=label, version=version)
    return Call("SetModelLabel", request, lambda r: dict(sorted(r.labels.items())))


def search_movies(query: str, limit: int, model: convert.ModelArg) -> Call[list[Movie]]:
    request = pb.SearchMoviesRequest(model=convert.model_ref(model), query=query, limit=limit)
    return Call("SearchMovies", request, lambda r: [convert.movie(m) for m in r.movies])


def _dataset_infos(response: Any) -> list[DatasetInfo]:
    return [convert.dataset_info(d) for d in response.datasets]


def list_datasets(name: str | None) -> Call[list[DatasetInfo]]:
    return Call("ListDatasets", pb.ListDatasetsRequest(name=name or ""), _dataset_infos)


def get_dataset(name: convert.DatasetArg, version: int) -> Call[DatasetInfo]:
    request = pb.GetDatasetRequest(dataset=convert.dataset_ref(name, version))
    return Call("GetDataset", request, lambda r: convert.dataset_info(r.dataset))


def delete_dataset(name: convert.DatasetArg, version: int) -> Call[list[DatasetInfo]]:
    request = pb.DeleteDatasetRequest(dataset=convert.dataset_ref(name, version))
    return Call("DeleteDataset", request, _dataset_infos)


ImportProgress = Callable[[int, int], None]


def import_dataset(
    name: str,
    ratings: Any,
    watchers: Any,
    movies: Any,
    description: str,
    chunk_rows: int,
    progress: ImportProgress | None,
) -> Call[DatasetInfo]:
    """A client-streaming call: its `request` is the iterator of messages. Every column is
    converted and checked here, before the stream starts, since an error raised while gRPC
    pulls messages would reach the caller only as a cancelled call."""
    columns = DatasetColumns.from_tables(ratings, movies, watchers)
    messages = convert.import_requests(name, description, columns, chunk_rows)
    header, _ = next(messages)  # checks chunk_rows now
    tables = (columns.ratings, columns.watchers, columns.movies)
    total = sum(len(t) for t in tables if t is not None)

    def requests() -> Iterator[Any]:
        yield header
        sent = 0
        for message, rows in messages:
            yield message
            sent += rows  # gRPC asks for the next message once it has taken this one
            if progress is not None:
                progress(sent, total)

    return Call("ImportDataset", requests(), lambda r: convert.dataset_info(r.dataset))
