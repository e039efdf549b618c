"""The bearer-token interceptor and the TLS credentials, on real in-process gRPC servers."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.wrappers_pb2 import StringValue

from movie_embeddings_server.serving.security import TokenAuth, server_credentials

TOKEN = "s3cret-token"
EXACT = (("authorization", f"Bearer {TOKEN}"),)
GUARDED, OPEN, STREAM = "/test.Echo/Guarded", "/test.Echo/Open", "/test.Echo/Stream"
HEALTH = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _guarded(method: str) -> bool:
    """Everything but OPEN: health and reflection must stay open all the same."""
    return method != OPEN


HI = StringValue(value="hi")
# Real (de)serializers, as the service's handlers have: the refusal must keep them in place.
CODEC: dict[str, Any] = {
    "request_deserializer": StringValue.FromString,
    "response_serializer": StringValue.SerializeToString,
}
CALLER_CODEC: dict[str, Any] = {
    "request_serializer": StringValue.SerializeToString,
    "response_deserializer": StringValue.FromString,
}


def _echo(request: StringValue, context: grpc.ServicerContext) -> StringValue:
    return request


def _twice(request: StringValue, context: grpc.ServicerContext) -> Iterator[StringValue]:
    yield request
    yield request


def _unary(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(method, **CALLER_CODEC)


def _serve(credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, str]:
    """A started server with the token interceptor, its methods echoing a StringValue."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), interceptors=[TokenAuth(TOKEN, _guarded)]
    )
    unary = grpc.unary_unary_rpc_method_handler(_echo, **CODEC)
    methods = {
        "test.Echo": {"Guarded": unary, "Open": unary},
        "grpc.health.v1.Health": {"Check": unary},
        "grpc.reflection.v1alpha.ServerReflection": {"ServerReflectionInfo": unary},
    }
    handlers = [grpc.method_handlers_generic_handler(s, m) for s, m in methods.items()]
    stream = grpc.unary_stream_rpc_method_handler(_twice, **CODEC)
    handlers.append(grpc.method_handlers_generic_handler("test.Echo", {"Stream": stream}))
    server.add_generic_rpc_handlers(handlers)
    address = "127.0.0.1:0"
    if credentials:
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    server, target = _serve()
    try:
        with grpc.insecure_channel(target) as channel:
            yield channel
    finally:
        server.stop(None)


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code(), refused.value.details() or ""


def test_the_exact_token_passes_on_unary_and_streaming_methods(channel: grpc.Channel) -> None:
    assert _unary(channel, GUARDED)(HI, metadata=EXACT, timeout=10) == HI
    stream = channel.unary_stream(STREAM, **CALLER_CODEC)
    assert list(stream(HI, metadata=EXACT, timeout=10)) == [HI, HI]


@pytest.mark.parametrize(
    "value",
    ["Bearer ", "Bearer", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN[:1]}", f"Bearer {TOKEN} ",
     f"Bearer  {TOKEN}", f" Bearer {TOKEN}", f"Bearer {TOKEN}x", f"bearer {TOKEN}",
     f"Bearer {TOKEN.upper()}", TOKEN],
)  # fmt: skip
def test_anything_but_the_exact_value_is_refused_as_wrong(
    channel: grpc.Channel, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    metadata = (("authorization", value),)
    with caplog.at_level(logging.WARNING, "movie_embeddings_server.serving.security"):
        code, details = _code(lambda: _unary(channel, GUARDED)(HI, metadata=metadata))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details == "wrong bearer token: send metadata 'authorization: Bearer <token>'"
    assert f"{GUARDED} UNAUTHENTICATED: wrong bearer token" in caplog.messages


def test_no_token_is_refused_as_missing_on_both_kinds_of_method(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "movie_embeddings_server.serving.security"):
        unary = _code(lambda: _unary(channel, GUARDED)(HI, timeout=10))
        streamed = _code(lambda: list(channel.unary_stream(STREAM, **CALLER_CODEC)(HI, timeout=10)))
    missing = "missing bearer token: send metadata 'authorization: Bearer <token>'"
    assert unary == streamed == (grpc.StatusCode.UNAUTHENTICATED, missing)
    assert caplog.messages == [
        f"{GUARDED} UNAUTHENTICATED: missing bearer token",
        f"{STREAM} UNAUTHENTICATED: missing bearer token",
    ]


@pytest.mark.parametrize("method", [OPEN, HEALTH, REFLECTION])
def test_unguarded_health_and_reflection_methods_need_no_token(
    channel: grpc.Channel, method: str
) -> None:
    assert _unary(channel, method)(HI, timeout=10) == HI


def test_an_unknown_method_is_unimplemented_not_unauthenticated(channel: grpc.Channel) -> None:
    code, _ = _code(lambda: _unary(channel, "/test.Echo/Nothing")(HI, timeout=10))
    assert code == grpc.StatusCode.UNIMPLEMENTED


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key, and the key: (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    paths = directory / f"{name}.crt", directory / f"{name}.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _call_open(target: str, root: Path, client: tuple[Path, Path] | None = None) -> str:
    chain, key = (client[0].read_bytes(), client[1].read_bytes()) if client else (None, None)
    credentials = grpc.ssl_channel_credentials(root.read_bytes(), key, chain)
    with grpc.secure_channel(target, credentials) as channel:
        reply: StringValue = _unary(channel, OPEN)(StringValue(value="tls"), timeout=10)
        return reply.value


def test_tls_without_a_client_ca_serves_clients_without_certificates(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "server")
    server, target = _serve(server_credentials(cert, key, None))
    try:
        assert _call_open(target, cert) == "tls"
        other, _ = _self_signed(tmp_path, "other")  # not the server's: the client refuses it
        code, details = _code(lambda: _call_open(target, other))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "CERTIFICATE_VERIFY_FAILED" in details, details
    finally:
        server.stop(None)


def test_mutual_tls_serves_only_clients_with_a_certificate_the_ca_signed(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "server")
    client = _self_signed(tmp_path, "client")
    server, target = _serve(server_credentials(cert, key, client[0]))
    try:
        for refused in (None, _self_signed(tmp_path, "stranger")):
            code, details = _code(lambda: _call_open(target, cert, refused))  # noqa: B023
            # Refused in the handshake by a live server (it serves the next call).
            assert code == grpc.StatusCode.UNAVAILABLE
            assert "Connection refused" not in details, details
            assert _call_open(target, cert, client) == "tls"
    finally:
        server.stop(None)
