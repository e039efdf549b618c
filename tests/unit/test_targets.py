"""How the SDK turns its target into gRPC's: one address as given, several as one list."""

from __future__ import annotations

import pytest

from movie_embeddings._calls import grpc_target


def test_one_target_is_left_to_grpc_and_its_dns_resolver() -> None:
    assert grpc_target("localhost:50051") == ("localhost:50051", "")
    assert grpc_target("dns:///movie-embeddings.default.svc:50051")[0].startswith("dns:///")


def test_several_targets_become_one_address_list_and_tls_checks_the_first_name() -> None:
    assert grpc_target("127.0.0.1:1, 127.0.0.1:2") == ("ipv4:127.0.0.1:1,127.0.0.1:2", "127.0.0.1")
    address, name = grpc_target("localhost:7,127.0.0.1:8")
    assert address.startswith("ipv4:") and address.endswith(",127.0.0.1:8")
    assert name == "localhost"
    assert grpc_target("[::1]:5,[::1]:6") == ("ipv6:[::1]:5,[::1]:6", "::1")


def test_an_unknown_host_among_several_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot resolve"):
        grpc_target("127.0.0.1:1,no-such-host.invalid:2")
