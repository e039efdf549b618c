"""The gRPC servicer: validate, convert between protobuf and numpy, delegate. The model's
answers (NearestMovies, Reconstruct) here; its movies' RPCs in movie_rpcs.py, its versions'
in model_rpcs.py, the datasets' in dataset_rpcs.py."""

from __future__ import annotations

import logging
import threading

import grpc
import numpy as np

from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc

from .. import config, errors
from ..model import filters, search
from ..model.catalogue import Catalogue
from ..model.inference import ServedModel, check_top_k, sigmoid_of_negated
from ..model.vectors import Ranked
from ..store.datasets import DatasetStore
from ..store.models import Store
from .batching import Gatherer, SplitProduct
from .dataset_rpcs import DatasetRpcs
from .metrics import Metrics
from .model_rpcs import ModelRpcs, ref_of
from .movie_rpcs import MovieRpcs
from .rpc import handler
from .trainer import Trainer

log = logging.getLogger(__name__)

METRIC_NAMES = {
    pb.METRIC_UNSPECIFIED: "cosine",
    pb.METRIC_COSINE: "cosine",
    pb.METRIC_DOT: "dot",
    pb.METRIC_EUCLIDEAN: "euclidean",
}


# By-id answers with k up to this are kept in the version's memo; larger ones are rare and big.
MEMO_MAX_K = 100


def _packed_floats(values: np.ndarray) -> bytes:
    """Field 1 as a packed `repeated float` on the wire. Parsing it is a copy, where filling
    the field from Python floats costs ~1 us per 30 values (2 ms for 59,047 movies)."""
    data = values.astype("<f4", copy=False).tobytes()
    head, size = bytearray(b"\x0a"), len(data)  # field 1, length-delimited
    while size > 0x7F:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head) + data


def _add_reconstruction(
    response: pb.ReconstructResponse,
    catalogue: Catalogue,
    probabilities: np.ndarray,
    chosen: np.ndarray,
    every: bool = True,
    because: np.ndarray | None = None,
) -> None:
    """One watcher's chosen rows as recommendations (the catalogue's ids, probabilities,
    titles), with every movie's probability unless `every` is false (recommendations_only),
    and each one's liked rows that led to it when `because` holds them (a row per chosen
    row)."""
    reconstruction = response.reconstructions.add()
    if every:
        reconstruction.MergeFromString(_packed_floats(probabilities))  # probabilities: field 1
    add = reconstruction.recommendations.add  # builds in place: extend would copy each
    for m, r, p in zip(
        catalogue.ids(chosen).tolist(), chosen.tolist(), probabilities[chosen].tolist(), strict=True
    ):
        add(movie_id=m, probability=p, title=catalogue.title(r))
    if because is not None:
        for recommendation, rows in zip(reconstruction.recommendations, because, strict=True):
            recommendation.because_movie_ids[:] = catalogue.ids(rows).tolist()
            recommendation.because_titles[:] = [catalogue.title(r) for r in rows.tolist()]


def _movie_filter(message: pb.MovieFilter) -> filters.MovieFilter:
    return filters.MovieFilter(
        message.min_likes if message.HasField("min_likes") else None,
        message.genres[:],
        message.exclude_genres[:],
    )


def _hidden(served: ServedModel, i: int, w: pb.Watcher) -> tuple[np.ndarray, list[int]]:
    """Watcher i's hidden layer and liked rows: as the request describes it, or as the
    model's dataset has the watcher its id names."""
    if not w.HasField("watcher_id"):
        return served.hidden_one(i, w.ratings, w.liked_movie_ids, w.age_years, w.education)
    if w.ratings or w.liked_movie_ids or w.age_years or w.education:
        raise errors.InvalidArgument(
            f"watchers[{i}]",
            "set watcher_id alone: the watcher's likes, age and education are its dataset's",
        )
    liked, age_years, education = served.known_watcher(i, w.watcher_id)
    return served.hidden_one(i, (), liked, age_years, education)


class MovieEmbeddingServicer(
    ModelRpcs, MovieRpcs, DatasetRpcs, pb_grpc.MovieEmbeddingServiceServicer
):
    """Thin: each RPC resolves the model, converts the request, calls the domain, converts back."""

    def __init__(
        self,
        store: Store,
        trainer: Trainer,
        limits: config.Limits,
        access_log: bool = False,
        metrics: Metrics | None = None,
        server_id: str = "",
        *,
        datasets: DatasetStore,
        max_dataset_ratings: int,
        max_concurrent_imports: int = 1,
        gatherer: Gatherer | None = None,
    ) -> None:
        self.store = store
        # Off unless given: concurrent Reconstruct calls, and NearestMovies by a vector by
        # cosine, each in one pass over their version's layer.
        self.gatherer = gatherer or Gatherer(wait=0.0, max_rows=1)
        self.product = SplitProduct()
        self.datasets = datasets
        self.max_dataset_ratings = max_dataset_ratings
        self.max_concurrent_imports = max_concurrent_imports
        self.imports = threading.BoundedSemaphore(max_concurrent_imports)
        self.trainer = trainer
        self.limits = limits
        self.access_log = access_log
        self.metrics = metrics
        self.trailing_metadata = (("server-id", server_id),) if server_id else ()

    @handler
    def NearestMovies(
        self, request: pb.NearestMoviesRequest, context: grpc.ServicerContext
    ) -> pb.NearestMoviesResponse:
        served = self._model(request.model)
        query = request.WhichOneof("query")
        if (
            query != "movie_id"
            or request.exclude_movie_ids
            or request.k > MEMO_MAX_K
            or request.HasField("filter")
        ):
            return self._nearest(served, request, query, context)
        key = ("nearest", request.movie_id, request.k, request.metric)
        if (answer := served.memo.get(key)) is not None:
            return answer
        return served.remember(key, self._nearest(served, request, query, context))

    def _nearest(
        self,
        served: ServedModel,
        request: pb.NearestMoviesRequest,
        query: str | None,
        context: grpc.ServicerContext,
    ) -> pb.NearestMoviesResponse:
        if request.metric not in METRIC_NAMES:
            raise errors.InvalidArgument("metric", f"unknown metric value {request.metric}")

        def gathered(unit_query: np.ndarray, ranked: Ranked) -> tuple[np.ndarray, np.ndarray]:
            """Its cosines with every movie, in one pass with concurrent calls' queries, ranked
            by the thread that ran the pass."""
            return self.gatherer.run(
                (served, "nearest"),
                unit_query[None],
                lambda queries: served.cosines(queries, self.product),
                context.add_callback,
                lambda scores: ranked(scores[0]),
            )

        rows, scores = served.nearest(
            movie_id=request.movie_id if query == "movie_id" else None,
            vector=np.asarray(request.vector.values, dtype=np.float32)
            if query == "vector"
            else None,
            k=request.k or 10,
            metric=METRIC_NAMES[request.metric],
            exclude=np.asarray(request.exclude_movie_ids, dtype=np.int64),
            leave_out=served.neighbour_left_out(_movie_filter(request.filter)),
            gathered=gathered,
        )
        catalogue = served.catalogue
        ids = rows if catalogue.is_identity else catalogue.movie_ids[rows].tolist()
        return pb.NearestMoviesResponse(
            neighbors=[
                pb.Neighbor(movie_id=i, score=s, title=catalogue.title(r))
                for i, r, s in zip(ids, rows, scores, strict=True)
            ],
            model=ref_of(served),
        )

    @handler
    def Reconstruct(
        self, request: pb.ReconstructRequest, context: grpc.ServicerContext
    ) -> pb.ReconstructResponse:
        served = self._model(request.model)
        if request.recommendations_only and request.top_k <= 0:
            raise errors.InvalidArgument(
                "top_k", f"must be > 0 with recommendations_only, got {request.top_k}"
            )
        if request.HasField("batch"):
            return self._reconstruct_batch(served, request)
        ws = request.watchers
        if not ws:
            raise errors.InvalidArgument("watchers", "must hold at least one watcher")
        found = [_hidden(served, i, w) for i, w in enumerate(ws)]
        check_top_k(request.top_k)
        leave_out = filters.left_out(served.catalogue, _movie_filter(request.filter))
        hidden = np.stack([h for h, _ in found])

        def ranked(negated: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
            """Each watcher's probabilities (its row, in place) and top k, ranked as every
            other path ranks them (ties to the lower row)."""
            out = []
            for row, (_, liked) in zip(negated, found, strict=True):
                probabilities = sigmoid_of_negated(row)
                out.append(
                    (probabilities, search.top_k(probabilities, request.top_k, liked, leave_out))
                )
            return out

        answers = self.gatherer.run(
            (served, "reconstruct"),
            hidden,
            lambda rows: served.negated_logits(rows, self.product),
            context.add_callback,
            ranked,
        )
        response = pb.ReconstructResponse(model=ref_of(served))
        for (_, liked), (probabilities, chosen) in zip(found, answers, strict=True):
            _add_reconstruction(
                response,
                served.catalogue,
                probabilities,
                chosen,
                not request.recommendations_only,
                served.nearest_liked(chosen, liked) if request.because else None,
            )
        return response

    @staticmethod
    def _reconstruct_batch(
        served: ServedModel, request: pb.ReconstructRequest
    ) -> pb.ReconstructResponse:
        """The dense form: arrays in, arrays out, with no per-value protobuf work."""
        if request.watchers:
            raise errors.InvalidArgument("batch", "set watchers or batch, not both")
        if request.because:
            raise errors.InvalidArgument("because", "not with batch: ask with watchers")
        batch = request.batch
        ratings = batch.ratings  # each read of a bytes field is a copy
        if len(ratings) % 4:
            raise errors.InvalidArgument("batch.ratings", "must be whole float32 values (4 bytes)")
        watchers = served.dense_watchers(
            np.frombuffer(ratings, dtype="<f4"),
            np.asarray(batch.age_years, dtype=np.float32),
            np.asarray(batch.education, dtype=np.int64),
        )
        leave_out = filters.left_out(served.catalogue, _movie_filter(request.filter))
        probabilities, rows = served.reconstruct_padded(watchers, request.top_k, leave_out)
        ids = np.full((len(probabilities), request.top_k), -1, dtype="<i4")
        found = rows >= 0
        ids[:, : rows.shape[1]][found] = served.catalogue.ids(rows[found])
        answered = b"" if request.recommendations_only else probabilities.astype("<f4").tobytes()
        return pb.ReconstructResponse(
            batch=pb.ReconstructionBatch(
                probabilities=answered,
                recommended_movie_ids=ids.tobytes(),
            ),
            model=ref_of(served),
        )
