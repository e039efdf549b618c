"""DeleteModel, SetModelLabel and ModelRef.label through a real in-process server and the
generated stubs: the token guards both, labels answer queries and protect their versions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc
from movie_embeddings_server import config
from movie_embeddings_server.serving.app import Running, ServerConfig, create_server

TOKEN = "s3cret"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@dataclass
class Server:
    running: Running
    stub: pb_grpc.MovieEmbeddingServiceStub


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    grpc_server, running = create_server(
        ServerConfig(tmp_path_factory.mktemp("versions"), port=0, auth_token=TOKEN)
    )
    grpc_server.start()
    for seed in (1, 2, 3):  # versions 1-3 of "m"
        synthetic = config.resolve_synthetic({"num_watchers": 100, "seed": seed})
        running.trainer.train("m", synthetic, config.resolve_training({"epochs": 1}))
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield Server(running, pb_grpc.MovieEmbeddingServiceStub(channel))
    running.stop(None)


def _code(method: Any, request: Any, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    """The status code a call fails with."""
    with pytest.raises(grpc.RpcError) as exc:
        method(request, metadata=metadata)
    return exc.value.code()


def _versions(server: Server) -> list[int]:
    listed = server.stub.ListModels(pb.ListModelsRequest(name="m")).models
    return [m.ref.version for m in listed]


def test_delete_and_label_need_the_token(server: Server) -> None:
    label = pb.SetModelLabelRequest(name="m", label="stable", version=1)
    delete = pb.DeleteModelRequest(model=pb.ModelRef(name="m", version=1))
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        for method, request in (
            (server.stub.SetModelLabel, label),
            (server.stub.DeleteModel, delete),
        ):
            assert _code(method, request, metadata) == grpc.StatusCode.UNAUTHENTICATED
    assert _versions(server) == [1, 2, 3]
    assert server.running.store.labels_of(server.running.store.resolve("m", 1)) == []


def test_a_label_answers_queries_and_protects_its_version(server: Server) -> None:
    stub = server.stub
    set_label = stub.SetModelLabel(
        pb.SetModelLabelRequest(name="m", label="stable", version=2), metadata=AUTH
    )
    assert dict(set_label.labels) == {"stable": 2}
    by_label = pb.ModelRef(name="m", label="stable")
    answer = stub.GetMovieVector(pb.GetMovieVectorRequest(model=by_label, movie_id=3))
    assert answer.model == pb.ModelRef(name="m", version=2)
    assert list(stub.GetModel(pb.GetModelRequest(model=by_label)).model.labels) == ["stable"]

    with pytest.raises(grpc.RpcError) as exc:
        stub.GetModel(pb.GetModelRequest(model=pb.ModelRef(name="m", version=3, label="stable")))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(exc.value)
    assert status is not None
    details = error_details_pb2.BadRequest()
    status.details[0].Unpack(details)
    assert [v.field for v in details.field_violations] == ["model.label"]

    refused = pb.DeleteModelRequest(model=pb.ModelRef(name="m", version=2))
    with pytest.raises(grpc.RpcError) as exc:
        stub.DeleteModel(refused, metadata=AUTH)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 2 is labelled stable" in str(exc.value.details())
    assert _versions(server) == [1, 2, 3]

    deleted = stub.DeleteModel(
        pb.DeleteModelRequest(model=pb.ModelRef(name="m", version=3)), metadata=AUTH
    )
    assert [m.ref.version for m in deleted.models] == [3]
    assert _versions(server) == [1, 2]
    newest = stub.GetModel(pb.GetModelRequest(model=pb.ModelRef(name="m"))).model
    assert newest.ref.version == 2
    unknown = pb.GetModelRequest(model=pb.ModelRef(name="m", label="nope"))
    assert _code(stub.GetModel, unknown) == grpc.StatusCode.NOT_FOUND
    removed = stub.SetModelLabel(pb.SetModelLabelRequest(name="m", label="stable"), metadata=AUTH)
    assert dict(removed.labels) == {}
    everything = stub.DeleteModel(pb.DeleteModelRequest(model=pb.ModelRef(name="m")), metadata=AUTH)
    assert [m.ref.version for m in everything.models] == [1, 2]
    assert _versions(server) == []
