"""The baseline: a bare grpcio server whose generic handler answers zero bytes, as many as
the request's first 8 bytes say (little-endian).

    python benchmarks/bare_server.py [--port 0] [--asyncio]

Prints "listening on 127.0.0.1:PORT" once it serves; runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from concurrent import futures

import grpc

from movie_embeddings_server.serving.malloc import reuse_freed_memory


@functools.cache
def _zeros(size: int) -> bytes:
    return bytes(size)


def _handler(request: bytes, context: object) -> bytes:
    return _zeros(int.from_bytes(request[:8], "little"))


class Generic(grpc.GenericRpcHandler):
    """Every method answers as `_handler` does; no (de)serialisation, no servicer."""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(_handler)


def serve_threads(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((Generic(),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    server.wait_for_termination()


async def serve_asyncio(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Generic(),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--asyncio", action="store_true", help="grpc.aio instead of threads")
    args = parser.parse_args()
    reuse_freed_memory()  # as the server does
    if args.asyncio:
        asyncio.run(serve_asyncio(args.port))
    else:
        serve_threads(args.port)


if __name__ == "__main__":
    main()
