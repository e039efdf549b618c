"""TLS, mutual TLS and bearer tokens, with certificates made at test time, through real
server processes, the SDK and the CLI."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import CLI, ServerProcess, copy_store, start_server, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import movie_embeddings as me
from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc

TOKEN = "s3cret-token"
# `authorization` values that are not exactly "Bearer <token>": each must be refused (a prefix,
# trimming or case-blind comparison would let some through).
NEAR_MISSES = [
    "Bearer ",
    "Bearer",
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN[:1]}",
    f"Bearer {TOKEN} ",
    f"Bearer  {TOKEN}",
    f" Bearer {TOKEN}",
    f"Bearer {TOKEN}x",
    f"bearer {TOKEN}",
    f"Bearer {TOKEN.upper()}",
    TOKEN,
]


@dataclass
class Pem:
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes()


def _issue(directory: Path, name: str, issuer: tuple | None, *, ca: bool = False) -> tuple:
    """A key and a certificate for `name` (127.0.0.1 and localhost), signed by `issuer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer or (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_cert.subject if signer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(signer_key, hashes.SHA256())
    pem = Pem(directory / f"{name}.crt", directory / f"{name}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem, (cert, key)


@dataclass
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    stranger: Pem  # a client certificate from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_signer = _issue(d, "ca", None, ca=True)
    _, other_signer = _issue(d, "other-ca", None, ca=True)
    return Pki(
        ca,
        _issue(d, "server", ca_signer)[0],
        _issue(d, "client", ca_signer)[0],
        _issue(d, "stranger", other_signer)[0],
    )


def _start(server: ServerProcess, tmp_path: Path, pki: Pki, *flags: str) -> ServerProcess:
    data = copy_store(server, tmp_path / "data")
    client_cert, client_key = pki.client.read()
    credentials = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes(), client_key, client_cert)
    tls = ("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    return start_server(
        data, tmp_path / "server.log", *tls, *flags, channel_credentials=credentials
    )


@pytest.fixture(scope="module")
def tls_server(server, pki, tmp_path_factory):  # type: ignore[no-untyped-def]
    """TLS; the token is required on Train only (given by the environment variable)."""
    os.environ["MOVIE_EMBEDDINGS_AUTH_TOKEN"] = TOKEN
    try:
        proc = _start(server, tmp_path_factory.mktemp("tls"), pki)
    finally:
        del os.environ["MOVIE_EMBEDDINGS_AUTH_TOKEN"]
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def mtls_server(server, pki, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Mutual TLS; the token is required on every RPC of the service (--auth-all)."""
    flags = ("--tls-client-ca", str(pki.ca.cert), "--auth-token", TOKEN, "--auth-all")
    proc = _start(server, tmp_path_factory.mktemp("mtls"), pki, *flags)
    yield proc
    assert proc.stop() == 0


def _client(target: str, pki: Pki, *, cert: Pem | None = None, **kw) -> me.Client:  # type: ignore[no-untyped-def]
    chain, key = cert.read() if cert else (None, None)
    return me.Client(
        target,
        root_certificates=pki.ca.cert.read_bytes(),
        certificate_chain=chain,
        private_key=key,
        timeout=10,
        **kw,
    )


def _refused_in_the_handshake(client: me.Client, server: ServerProcess, reason: str) -> str:
    """A call the server's TLS refuses: UNAVAILABLE because the server hung up in the
    handshake (a dead server would refuse the connection), and the server's log names
    `reason`. The client's details, for more checks."""
    offset = len(server.log_text())
    with pytest.raises(me.Unavailable) as refused:
        client.list_models()
    assert "Connection refused" not in refused.value.details, refused.value.details
    wait_until(lambda: reason in server.log_text()[offset:], 10, f"{reason} in the log")
    return refused.value.details


def test_tls_serves_queries_and_refuses_plaintext(tls_server: ServerProcess, pki: Pki) -> None:
    with _client(tls_server.target, pki) as client:
        assert client.movie_vector(0).shape == (5,)  # queries need no token here
    with me.Client(tls_server.target, timeout=5) as plain:
        details = _refused_in_the_handshake(plain, tls_server, "WRONG_VERSION_NUMBER")
    assert "Socket closed" in details


def test_tls_with_an_untrusted_server_certificate_fails(
    tls_server: ServerProcess, pki: Pki
) -> None:
    stranger = pki.stranger.cert.read_bytes()  # not the CA that signed the server's
    with (
        me.Client(tls_server.target, root_certificates=stranger, timeout=5) as client,
        pytest.raises(me.Unavailable) as refused,
    ):
        client.list_models()
    # The client itself refused the server's certificate.
    assert "CERTIFICATE_VERIFY_FAILED" in refused.value.details, refused.value.details


@pytest.mark.parametrize(
    "token", [None, "wrong-token", TOKEN + "x", "", TOKEN[:-1], TOKEN.upper(), f" {TOKEN}"]
)
def test_train_without_the_right_token_is_unauthenticated(
    tls_server: ServerProcess, pki: Pki, token: str | None
) -> None:
    name = f"secret-{uuid.uuid4().hex[:8]}"
    with _client(tls_server.target, pki, token=token) as client:
        with pytest.raises(me.Unauthenticated, match="bearer token") as info:
            list(client.train(name, num_watchers=100, epochs=1, seed=1))
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert client.list_models(name) == []
    assert "Train UNAUTHENTICATED" in tls_server.log_text()


def test_train_with_the_token_works(tls_server: ServerProcess, pki: Pki) -> None:
    name = f"secret-{uuid.uuid4().hex[:8]}"
    with _client(tls_server.target, pki, token=TOKEN) as client:
        info = list(client.train(name, num_watchers=100, epochs=1, seed=1))[-1]
        assert info.ref == me.ModelRef(name, 1)


@pytest.mark.parametrize(
    ("cert", "reason"),
    [(None, "PEER_DID_NOT_RETURN_A_CERTIFICATE"), ("stranger", "CERTIFICATE_VERIFY_FAILED")],
)
def test_mtls_refuses_a_client_without_a_certificate_it_trusts(
    mtls_server: ServerProcess, pki: Pki, cert: str | None, reason: str
) -> None:
    # With TLS 1.3 the server checks the client's certificate after the client's side of the
    # handshake is done: the client sees only the connection closed, the server logs why.
    pem = pki.stranger if cert == "stranger" else None
    with _client(mtls_server.target, pki, cert=pem, token=TOKEN) as client:
        details = _refused_in_the_handshake(client, mtls_server, reason)
    assert "Socket closed" in details


@pytest.mark.parametrize("value", NEAR_MISSES)
def test_only_the_exact_authorization_value_is_accepted(
    mtls_server: ServerProcess, pki: Pki, value: str
) -> None:
    chain, key = pki.client.read()
    credentials = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes(), key, chain)
    with grpc.secure_channel(mtls_server.target, credentials) as channel:
        list_models = pb_grpc.MovieEmbeddingServiceStub(channel).ListModels
        with pytest.raises(grpc.RpcError) as refused:
            list_models(pb.ListModelsRequest(), metadata=[("authorization", value)], timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.details().startswith("wrong bearer token")
        # The same call on the same channel with the exact value passes.
        exact = [("authorization", f"Bearer {TOKEN}")]
        assert list_models(pb.ListModelsRequest(), metadata=exact, timeout=10).models


def test_mtls_with_auth_all_needs_the_token_on_every_rpc(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    with _client(mtls_server.target, pki, cert=pki.client) as client:
        for call in (client.list_models, lambda: client.movie_vector(0)):
            with pytest.raises(me.Unauthenticated):
                call()
    with _client(mtls_server.target, pki, cert=pki.client, token=TOKEN) as client:
        assert client.nearest_movies(1, k=3)[0].movie_id >= 0


def test_health_and_reflection_stay_open(mtls_server: ServerProcess, pki: Pki) -> None:
    chain, key = pki.client.read()
    credentials = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes(), key, chain)
    with grpc.secure_channel(mtls_server.target, credentials) as channel:  # no token
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for s in answer.list_services_response.service}
        assert "movie_embeddings.v1.MovieEmbeddingService" in names


def test_cli_speaks_mtls_with_a_token(mtls_server: ServerProcess, pki: Pki) -> None:
    base = [*CLI, "models", "--target", mtls_server.target, "--tls-ca", str(pki.ca.cert)]
    base += ["--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key)]
    env = {**os.environ, "MOVIE_EMBEDDINGS_AUTH_TOKEN": TOKEN}
    ok = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "default" in ok.stdout
    refused = subprocess.run(
        [*base, "--token", "wrong"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: UNAUTHENTICATED: wrong bearer token")
