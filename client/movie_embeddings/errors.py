"""One exception tree for the SDK, mapped from gRPC status codes by one table."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"  # where gRPC carries a google.rpc.Status


class MovieEmbeddingsError(Exception):
    """A call failed; `code` is the gRPC status code, `details` the server's message."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = message


class InvalidArgument(MovieEmbeddingsError):
    """A request field is malformed or out of bounds.

    `field_violations` lists (field, description) pairs, from the google.rpc.BadRequest
    details the server attaches, e.g. [("movie_id", "movie ids must be >= 0, got -1")].
    """

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        field_violations: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message, code)
        self.field_violations = field_violations or []


class NotFound(MovieEmbeddingsError):
    """No such model, version or movie."""


class AlreadyExists(MovieEmbeddingsError):
    """The thing to create exists already."""


class FailedPrecondition(MovieEmbeddingsError):
    """The server cannot answer yet (no model is ready)."""


class ResourceExhausted(MovieEmbeddingsError):
    """Too much work asked for, or too many trainings at once."""


class Unauthenticated(MovieEmbeddingsError):
    """Missing or wrong credentials."""


class PermissionDenied(MovieEmbeddingsError):
    """Credentials valid but not allowed."""


class Unavailable(MovieEmbeddingsError):
    """The server cannot be reached or is shutting down; reads may be retried."""


class DeadlineExceeded(MovieEmbeddingsError):
    """The call's deadline passed."""


class Cancelled(MovieEmbeddingsError):
    """The call was cancelled."""


class Aborted(MovieEmbeddingsError):
    """The operation was aborted (a conflict); the whole operation may be retried."""


class Unimplemented(MovieEmbeddingsError):
    """The server does not know this RPC."""


class ServerError(MovieEmbeddingsError):
    """The server failed (INTERNAL, UNKNOWN, DATA_LOSS, ...)."""


ERROR_FOR_CODE: dict[grpc.StatusCode, type[MovieEmbeddingsError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: ServerError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: ServerError,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DATA_LOSS: ServerError,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def _field_violations(trailing_metadata: Any) -> list[tuple[str, str]]:
    """The BadRequest field violations in a call's rich status (grpc-status-details-bin)."""
    found = []
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                found += [(v.field, v.description) for v in bad_request.field_violations]
    return found


def from_rpc_error(exc: grpc.RpcError) -> MovieEmbeddingsError:
    """The SDK exception for a failed call (raise it `from exc`); sync or asyncio calls."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    cls = ERROR_FOR_CODE.get(code, ServerError)
    if cls is InvalidArgument and hasattr(exc, "trailing_metadata"):
        return InvalidArgument(details, code, _field_violations(exc.trailing_metadata()))
    return cls(details, code)
