"""TLS credentials and bearer-token checks; health and reflection always stay open."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

TOKEN_ENV = "MOVIE_EMBEDDINGS_AUTH_TOKEN"
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS with the server's certificate; with `client_ca`, clients must present one it signed."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


class TokenAuth(grpc.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on the guarded methods (UNAUTHENTICATED else)."""

    def __init__(self, token: str, guarded: Callable[[str], bool]) -> None:
        self._expected = f"Bearer {token}".encode()
        self._guarded = guarded

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        method: str = details.method  # type: ignore[attr-defined]
        if handler is None or method.startswith(OPEN_PREFIXES) or not self._guarded(method):
            return handler
        given = dict(details.invocation_metadata).get("authorization", "")  # type: ignore[attr-defined]
        # Constant time: how much of a wrong token matches must not show in the reply's timing.
        if hmac.compare_digest(str(given).encode(), self._expected):
            return handler
        reason = "missing" if not given else "wrong"
        log.warning("%s UNAUTHENTICATED: %s bearer token", method, reason)

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{reason} bearer token: send metadata 'authorization: Bearer <token>'",
            )

        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                refuse, handler.request_deserializer, handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
