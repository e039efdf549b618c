"""The dataset RPCs (ImportDataset, ListDatasets, GetDataset, DeleteDataset) of the servicer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import grpc

from movie_embeddings.v1 import movie_embeddings_pb2 as pb

from ..errors import Cancelled, InvalidArgument
from ..store.datasets import DatasetBuilder, DatasetStore
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


def _build(requests: Iterator[pb.ImportDatasetRequest], max_ratings: int) -> DatasetBuilder:
    """Feed the stream to a builder: a header first, then chunks, each checked as it comes."""
    builder: DatasetBuilder | None = None
    for chunk, request in enumerate(requests):
        part = request.WhichOneof("part")
        if part == "header":
            if builder:
                raise InvalidArgument(f"chunks[{chunk}].header", "only the first message is one")
            builder = DatasetBuilder(request.header.name, request.header.description, max_ratings)
        elif builder is None:
            raise InvalidArgument(
                f"chunks[{chunk}]", f"the first message must be a header, got {part or 'none'}"
            )
        elif part == "ratings":
            r = request.ratings
            builder.add_ratings(chunk, r.watcher_ids, r.movie_ids, r.ratings, r.timestamps)
        elif part == "watchers":
            w = request.watchers
            builder.add_watchers(chunk, w.watcher_ids, w.age_years, w.education)
        elif part == "movies":
            m = request.movies
            builder.add_movies(chunk, m.movie_ids, m.titles, m.genres)
        else:
            raise InvalidArgument(
                f"chunks[{chunk}]", "empty: set header, ratings, watchers or movies"
            )
    if builder is None:
        raise InvalidArgument("chunks", "no messages: an import starts with a header")
    return builder


class DatasetRpcs:
    """Mixed into the servicer, which sets these attributes."""

    datasets: DatasetStore
    max_dataset_ratings: int

    @handler
    def ImportDataset(
        self, request_iterator: Iterator[pb.ImportDatasetRequest], context: grpc.ServicerContext
    ) -> pb.ImportDatasetResponse:
        try:
            builder = _build(request_iterator, self.max_dataset_ratings)
        except grpc.RpcError as exc:  # the caller went away or its deadline passed mid-stream
            raise Cancelled("the import stream broke off: nothing was stored") from exc
        built = builder.build()
        # A stream that broke off (a cancel, a deadline, a message over the size limit) can
        # read as one that ended, and gRPC may tell of the break a moment later: only a call
        # still alive once its version is stored keeps it.
        broke_off = Cancelled("the import stream broke off: nothing was stored")
        if not context.is_active():
            raise broke_off
        info = self.datasets.save(built)
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
