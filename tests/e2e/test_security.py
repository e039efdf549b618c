"""TLS, mutual TLS and bearer tokens, with certificates made at test time, through real
server processes, the SDK and the CLI."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import CLI, ServerProcess, copy_store, start_server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import movie_embeddings as me

TOKEN = "s3cret-token"


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


def test_tls_serves_queries_and_refuses_plaintext(tls_server: ServerProcess, pki: Pki) -> None:
    with _client(tls_server.target, pki) as client:
        assert client.movie_vector(0).shape == (5,)  # queries need no token here
    with me.Client(tls_server.target, timeout=5) as plain, pytest.raises(me.Unavailable):
        plain.list_models()


def test_tls_with_an_untrusted_server_certificate_fails(
    tls_server: ServerProcess, pki: Pki
) -> None:
    stranger = pki.stranger.cert.read_bytes()  # not the CA that signed the server's
    with (
        me.Client(tls_server.target, root_certificates=stranger, timeout=5) as client,
        pytest.raises(me.Unavailable),
    ):
        client.list_models()


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x", ""])
def test_train_without_the_right_token_is_unauthenticated(
    tls_server: ServerProcess, pki: Pki, token: str | None
) -> None:
    with _client(tls_server.target, pki, token=token) as client:
        with pytest.raises(me.Unauthenticated, match="bearer token") as info:
            list(client.train("secret", num_watchers=100, epochs=1, seed=1))
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "secret" not in {m.name for m in client.list_models()}
    assert "Train UNAUTHENTICATED" in tls_server.log_text()


def test_train_with_the_token_works(tls_server: ServerProcess, pki: Pki) -> None:
    with _client(tls_server.target, pki, token=TOKEN) as client:
        info = list(client.train("secret", num_watchers=100, epochs=1, seed=1))[-1]
        assert info.ref == me.ModelRef("secret", 1)


def test_mtls_refuses_a_client_without_a_certificate(mtls_server: ServerProcess, pki: Pki) -> None:
    for cert in (None, pki.stranger):
        with (
            _client(mtls_server.target, pki, cert=cert, token=TOKEN) as client,
            pytest.raises(me.Unavailable),
        ):
            client.list_models()


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
