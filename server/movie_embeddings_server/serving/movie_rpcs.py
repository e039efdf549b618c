"""The RPCs of a model's movies (GetMovieVector, BatchGetMovieVectors, StreamMovieVectors,
SearchMovies) of the servicer: vectors, titles, genres and likes by movie id or title."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np

from movie_embeddings.v1 import movie_embeddings_pb2 as pb

from .. import errors
from ..model.catalogue import Catalogue
from ..model.inference import ServedModel
from .model_rpcs import ref_of
from .rpc import handler

# StreamMovieVectors' pages: ~1 MiB each, a quarter of gRPC's default message limit, counting
# ROW_BYTES of title, genres and framing a movie beside its floats.
PAGE_BYTES = 1 << 20
ROW_BYTES = 128
MAX_PAGE_SIZE = 100_000


def _movie_vectors(
    catalogue: Catalogue, rows: np.ndarray, matrix: np.ndarray, described: bool = False
) -> list[pb.MovieVector]:
    """The rows' MovieVector messages, with their titles; `described` adds their genres and
    like counts (StreamMovieVectors' pages carry them, BatchGetMovieVectors' answer does not)."""
    vectors = []
    for i, row, vector in zip(
        catalogue.ids(rows).tolist(), rows.tolist(), matrix.tolist(), strict=True
    ):
        message = pb.MovieVector(movie_id=i, vector=vector, title=catalogue.title(row))
        if described:
            message.genres[:] = catalogue.genre_list(row)
            message.num_likes = int(catalogue.num_likes[row])
        vectors.append(message)
    return vectors


class MovieRpcs:
    """Mixed into the servicer, whose ModelRpcs resolves a request's model."""

    _model: Callable[[pb.ModelRef], ServedModel]

    @handler
    def GetMovieVector(
        self, request: pb.GetMovieVectorRequest, context: grpc.ServicerContext
    ) -> pb.GetMovieVectorResponse:
        served = self._model(request.model)
        key = ("vector", request.movie_id)
        if (answer := served.memo.get(key)) is not None:
            return answer
        row = served.catalogue.row("movie_id", request.movie_id)
        return served.remember(
            key,
            pb.GetMovieVectorResponse(
                movie_id=request.movie_id,
                vector=served.embedding[row].tolist(),
                model=ref_of(served),
                title=served.catalogue.title(row),
            ),
        )

    @handler
    def BatchGetMovieVectors(
        self, request: pb.BatchGetMovieVectorsRequest, context: grpc.ServicerContext
    ) -> pb.BatchGetMovieVectorsResponse:
        served = self._model(request.model)
        rows, matrix = served.vectors(np.asarray(request.movie_ids, dtype=np.int64))
        return pb.BatchGetMovieVectorsResponse(
            vectors=_movie_vectors(served.catalogue, rows, matrix), model=ref_of(served)
        )

    @handler
    def StreamMovieVectors(
        self, request: pb.StreamMovieVectorsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamMovieVectorsResponse]:
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise errors.InvalidArgument(
                "page_size",
                f"must be in [0, {MAX_PAGE_SIZE}] (0 = ~1 MiB pages), got {request.page_size}",
            )
        served = self._model(request.model)
        rows, matrix = served.vectors(np.asarray(request.movie_ids, dtype=np.int64))
        page = request.page_size or max(1, PAGE_BYTES // (4 * served.embedding_dim + ROW_BYTES))
        for start in range(0, len(rows), page):
            chosen = rows[start : start + page]
            yield pb.StreamMovieVectorsResponse(
                vectors=_movie_vectors(
                    served.catalogue, chosen, matrix[start : start + page], described=True
                ),
                model=ref_of(served),
                total_movies=len(rows),
            )

    @handler
    def SearchMovies(
        self, request: pb.SearchMoviesRequest, context: grpc.ServicerContext
    ) -> pb.SearchMoviesResponse:
        served = self._model(request.model)
        catalogue = served.catalogue
        rows = catalogue.search(request.query, request.limit or 10)
        return pb.SearchMoviesResponse(
            movies=[
                pb.Movie(
                    movie_id=int(catalogue.movie_ids[r]),
                    title=catalogue.title(r),
                    genres=catalogue.genre_list(r),
                    num_likes=int(catalogue.num_likes[r]),
                )
                for r in rows
            ],
            model=ref_of(served),
        )
