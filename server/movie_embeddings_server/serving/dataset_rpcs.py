"""The dataset RPCs (ImportDataset, ListDatasets, GetDataset, DeleteDataset) of the servicer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc

from movie_embeddings.v1 import movie_embeddings_pb2 as pb

from ..errors import Cancelled, InvalidArgument, ResourceExhausted
from ..store.datasets import DatasetBuilder, DatasetStore
from .malloc import give_back_freed_memory
from .rpc import handler

# DatasetInfo's plain fields, which the info dict holds under the same names.
_INFO_FIELDS = [f.name for f in pb.DatasetInfo.DESCRIPTOR.fields if f.message_type is None]


def dataset_info(info: dict[str, Any]) -> pb.DatasetInfo:
    """A dataset version's description, from its info (metadata.json)."""
    message = pb.DatasetInfo(
        ref=pb.DatasetRef(name=info["name"], version=info["version"]),
        **{key: info[key] for key in _INFO_FIELDS if key in info},
    )
    message.create_time.FromDatetime(datetime.fromisoformat(info["create_time"]))
    return message


def _build(
    requests: Iterator[pb.ImportDatasetRequest], max_ratings: int, root: Path
) -> DatasetBuilder:
    """Feed the stream to a builder staging in the store at `root`: a header first, then
    chunks, each checked and staged as it comes. A refusal or a broken stream removes what
    was staged."""
    builder: DatasetBuilder | None = None
    try:
        for chunk, request in enumerate(requests):
            builder = _add(builder, chunk, request, max_ratings, root)
    except BaseException:
        if builder:
            builder.discard()
        raise
    if builder is None:
        raise InvalidArgument("chunks", "no messages: an import starts with a header")
    return builder


def _add(
    builder: DatasetBuilder | None,
    chunk: int,
    request: pb.ImportDatasetRequest,
    max_ratings: int,
    root: Path,
) -> DatasetBuilder:
    """The builder once it has the stream's message `chunk`."""
    part = request.WhichOneof("part")
    if part == "header":
        if builder:
            raise InvalidArgument(f"chunks[{chunk}].header", "only the first message is one")
        return DatasetBuilder(request.header.name, request.header.description, max_ratings, root)
    if builder is None:
        raise InvalidArgument(
            f"chunks[{chunk}]", f"the first message must be a header, got {part or 'none'}"
        )
    if part == "ratings":
        r = request.ratings
        builder.add_ratings(chunk, r.watcher_ids, r.movie_ids, r.ratings, r.timestamps)
    elif part == "watchers":
        w = request.watchers
        builder.add_watchers(chunk, w.watcher_ids, w.age_years, w.education)
    elif part == "movies":
        m = request.movies
        builder.add_movies(chunk, m.movie_ids, m.titles, m.genres)
    else:
        raise InvalidArgument(f"chunks[{chunk}]", "empty: set header, ratings, watchers or movies")
    return builder


class DatasetRpcs:
    """Mixed into the servicer, which sets these attributes."""

    datasets: DatasetStore
    max_dataset_ratings: int
    max_concurrent_imports: int
    imports: threading.Semaphore  # of max_concurrent_imports

    @handler
    def ImportDataset(
        self, request_iterator: Iterator[pb.ImportDatasetRequest], context: grpc.ServicerContext
    ) -> pb.ImportDatasetResponse:
        if not self.imports.acquire(blocking=False):
            raise ResourceExhausted(
                f"{self.max_concurrent_imports} import(s) already running (the server's "
                "--max-concurrent-imports); retry when one has finished"
            )
        try:
            return self._import(request_iterator, context)
        finally:
            self.imports.release()

    def _import(
        self, request_iterator: Iterator[pb.ImportDatasetRequest], context: grpc.ServicerContext
    ) -> pb.ImportDatasetResponse:
        try:
            builder = _build(request_iterator, self.max_dataset_ratings, self.datasets.root)
        except grpc.RpcError as exc:  # the caller went away or its deadline passed mid-stream
            raise Cancelled("the import stream broke off: nothing was stored") from exc
        # A stream that broke off (a cancel, a deadline, a message over the size limit) can
        # read as one that ended, and gRPC may tell of the break a moment later: only a call
        # still alive once its version is stored keeps it.
        broke_off = Cancelled("the import stream broke off: nothing was stored")
        give_back_freed_memory()  # what the chunks' messages took: the build's peak is its own
        try:
            staged = builder.stage()
            if not context.is_active():
                raise broke_off
            info = self.datasets.commit(staged)
        finally:
            builder.discard()  # what is left of the staging directory, if anything
            give_back_freed_memory()
        if not context.is_active():
            self.datasets.delete(info["name"], info["version"])
            raise broke_off
        return pb.ImportDatasetResponse(dataset=dataset_info(info))

    @handler
    def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.ServicerContext
    ) -> pb.ListDatasetsResponse:
        return pb.ListDatasetsResponse(
            datasets=[dataset_info(i) for i in self.datasets.list(request.name)]
        )

    @handler
    def GetDataset(
        self, request: pb.GetDatasetRequest, context: grpc.ServicerContext
    ) -> pb.GetDatasetResponse:
        info = self.datasets.resolve(request.dataset.name, request.dataset.version)
        return pb.GetDatasetResponse(dataset=dataset_info(info))

    @handler
    def DeleteDataset(
        self, request: pb.DeleteDatasetRequest, context: grpc.ServicerContext
    ) -> pb.DeleteDatasetResponse:
        ref = request.dataset
        deleted = self.datasets.delete(ref.name, ref.version)
        return pb.DeleteDatasetResponse(datasets=[dataset_info(i) for i in deleted])
