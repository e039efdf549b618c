"""Python SDK of the movie-embeddings gRPC server."""

from importlib.metadata import PackageNotFoundError, version

from .client import DEFAULT_TARGET, AsyncClient, Client
from .errors import (
    ERROR_FOR_CODE,
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    MovieEmbeddingsError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from .types import (
    DatasetColumns,
    DatasetInfo,
    DatasetRef,
    DatasetTraining,
    ModelInfo,
    ModelRef,
    Movie,
    MovieColumns,
    MovieVectors,
    Neighbor,
    RatingColumns,
    Recommendation,
    Reconstruction,
    ReconstructionBatch,
    SyntheticData,
    TrainingConfig,
    TrainProgress,
    Watcher,
    WatcherColumns,
)

try:
    __version__ = version("movie-embeddings")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_TARGET",
    "ERROR_FOR_CODE",
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "Cancelled",
    "Client",
    "DatasetColumns",
    "DatasetInfo",
    "DatasetRef",
    "DatasetTraining",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "ModelInfo",
    "ModelRef",
    "Movie",
    "MovieColumns",
    "MovieEmbeddingsError",
    "MovieVectors",
    "Neighbor",
    "NotFound",
    "PermissionDenied",
    "RatingColumns",
    "Recommendation",
    "Reconstruction",
    "ReconstructionBatch",
    "ResourceExhausted",
    "ServerError",
    "SyntheticData",
    "TrainProgress",
    "TrainingConfig",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Watcher",
    "WatcherColumns",
    "__version__",
]
