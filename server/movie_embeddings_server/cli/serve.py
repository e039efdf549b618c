"""`serve`: run the gRPC server, with every ServerConfig setting as a flag."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from .. import config
from ..serving.security import TOKEN_ENV
from .common import (
    DEFAULT_PORT,
    UsageError,
    byte_size,
    nonnegative_float,
    nonnegative_int,
    port,
    positive_float,
    positive_int,
)

DEFAULT_DATA_DIR = "data"
# ServerConfig's default (a test keeps them equal): here, so that parsing need not load app.
DEFAULT_MAX_DATASET_RATINGS = 50_000_000
DEFAULT_BATCH_WAIT_US = 5000
DEFAULT_MAX_BATCH_ROWS = 32

LIMIT_HELP = {
    "max_cells": "num_watchers x num_movies (RESOURCE_EXHAUSTED)",
    "max_epochs": "epochs (INVALID_ARGUMENT)",
    "max_embedding_dim": "embedding_dim (INVALID_ARGUMENT)",
    "max_hidden_units": "hidden_units (INVALID_ARGUMENT)",
}


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _reason(exc: OSError) -> str:
    """An OSError in words: "port 50051 is in use", "Permission denied: data", ..."""
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return exc.strerror or str(exc)


def cmd_serve(args: argparse.Namespace) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("serve: --tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise UsageError("serve: --tls-client-ca needs --tls-cert and --tls-key")
    from ..serving.app import (  # not at the top: `--help` need not load gRPC's server
        ServerConfig,
        serve,
    )

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = ServerConfig(
        data_dir=Path(args.data_dir),
        host=args.host,
        port=args.port,
        max_workers=args.max_workers,
        max_concurrent_trains=args.max_concurrent_trains,
        limits=config.Limits(
            **{f.name: getattr(args, f.name) for f in dataclasses.fields(config.Limits)}
        ),
        max_dataset_ratings=args.max_dataset_ratings,
        max_concurrent_imports=args.max_concurrent_imports,
        grace_seconds=args.grace_seconds,
        max_message_bytes=args.max_message_bytes,
        batch_wait_us=args.batch_wait_us,
        max_batch_rows=args.max_batch_rows,
        tls_cert=_path(args.tls_cert),
        tls_key=_path(args.tls_key),
        tls_client_ca=_path(args.tls_client_ca),
        auth_token=args.auth_token,
        auth_all=args.auth_all,
        access_log=args.access_log,
        metrics_port=args.metrics_port,
        poll_seconds=args.poll_seconds,
        server_id=args.server_id,
        keep_versions=args.keep_versions,
    )
    try:
        serve(settings)
    except OSError as exc:  # a port in use, an address not of this machine, an unwritable store
        raise UsageError(_reason(exc)) from exc
    return 0


def _network_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument(
        "--port",
        type=port,
        default=DEFAULT_PORT,
        help="port to bind, 1..65535; 0 = any free port (default: %(default)s)",
    )
    serve.add_argument("--tls-cert", help="PEM certificate (chain): serve TLS (with --tls-key)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument(
        "--tls-client-ca",
        help="PEM CA certificate(s): require mutual TLS with client certificates it signed",
    )
    serve.add_argument(
        "--auth-token",
        default=os.environ.get(TOKEN_ENV),
        help="require 'authorization: Bearer TOKEN' on the calls that write to the store: "
        "Train, ImportDataset, DeleteDataset, DeleteModel and SetModelLabel "
        f"(default: ${TOKEN_ENV}; prefer the variable: a flag shows in the process list)",
    )
    serve.add_argument(
        "--auth-all",
        action="store_true",
        help="require the token on every RPC of the service (health and reflection stay open)",
    )
    serve.add_argument(
        "--metrics-port",
        type=port,
        default=None,
        help="serve Prometheus metrics on http://HOST:PORT/metrics (HOST is --host; 0 picks a "
        "free port, logged at start; default: off)",
    )
    serve.add_argument(
        "--server-id",
        default="",
        help="this replica's name, sent with every answer as 'server-id' trailing metadata "
        "(default: HOSTNAME-PID)",
    )


def _capacity_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--max-workers",
        type=positive_int,
        default=None,
        help="threads answering RPCs; each Train or health Watch stream holds one while it "
        "lasts, and so does a query waiting to share a pass (default: one per core plus "
        "--max-concurrent-trains, plus 8 unless --batch-wait-us is 0; more threads contend "
        "for Python's GIL and answer fewer calls per second)",
    )
    serve.add_argument(
        "--max-concurrent-trains",
        type=positive_int,
        default=1,
        help="trainings allowed at once; more get RESOURCE_EXHAUSTED (default: %(default)s)",
    )
    for limit in dataclasses.fields(config.Limits):
        serve.add_argument(
            f"--{limit.name.replace('_', '-')}",
            type=positive_int,
            default=limit.default,
            help=f"cap on a Train's {LIMIT_HELP[limit.name]}; more is refused "
            "(default: %(default)s)",
        )
    serve.add_argument(
        "--max-dataset-ratings",
        type=positive_int,
        default=DEFAULT_MAX_DATASET_RATINGS,
        help="cap on the ratings of one imported dataset version; more is refused "
        "(RESOURCE_EXHAUSTED) (default: %(default)s)",
    )
    serve.add_argument(
        "--max-concurrent-imports",
        type=positive_int,
        default=1,
        help="imports (ImportDataset) allowed at once; more get RESOURCE_EXHAUSTED at once. "
        "Each stages its ratings on disk under --data-dir (up to ~45 bytes a rating while it "
        "builds) and takes a few bytes of memory a rating (default: %(default)s)",
    )
    serve.add_argument(
        "--batch-wait-us",
        type=nonnegative_int,
        default=DEFAULT_BATCH_WAIT_US,
        help="longest a Reconstruct call, or a NearestMovies by a vector by cosine, waits for "
        "concurrent calls of its kind on the same model version, to answer them all from one "
        "pass over its layer: it waits for as many as came together last time, so a version's "
        "lone callers soon wait not at all; 0 = never gather (default: %(default)s)",
    )
    serve.add_argument(
        "--max-batch-rows",
        type=positive_int,
        default=DEFAULT_MAX_BATCH_ROWS,
        help="watchers one gathered pass takes at most; a call with more "
        "runs alone (default: %(default)s)",
    )
    serve.add_argument(
        "--max-message-bytes",
        type=byte_size,
        default=4 * 2**20,
        help="largest request or response, e.g. 64MiB; larger ones fail RESOURCE_EXHAUSTED "
        "(default: %(default)s, gRPC's own)",
    )


def add_commands(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the gRPC server",
        description=(
            "Run the gRPC server. With an empty data dir it first trains the `default` model "
            "(seed 42); health reports SERVING once a model is ready."
        ),
    )
    serve.set_defaults(handler=cmd_serve, connect=False)
    _network_options(serve)
    serve.add_argument(
        "--data-dir",
        default=os.environ.get("MOVIE_EMBEDDINGS_DATA_DIR", DEFAULT_DATA_DIR),
        help="store of models and datasets, created if missing "
        "(default: $MOVIE_EMBEDDINGS_DATA_DIR or ./%(default)s)",
    )
    _capacity_options(serve)
    serve.add_argument(
        "--grace-seconds",
        type=nonnegative_float,
        default=5.0,
        help="time in-flight calls get to finish on SIGTERM/SIGINT (default: %(default)s)",
    )
    serve.add_argument(
        "--keep-versions",
        type=positive_int,
        default=None,
        metavar="N",
        help="keep the newest N unlabelled versions of each model and delete older ones from "
        "the store as new ones are stored (labelled versions are always kept; default: keep "
        "every version)",
    )
    serve.add_argument(
        "--poll-seconds",
        type=positive_float,
        default=2.0,
        help="how often to read --data-dir for the versions and labels other processes "
        "(replicas sharing the store, a training Job) wrote or deleted, and follow them "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log a line (RPC, status code, duration) for every call; without it, only for "
        "failed calls (each line costs ~10 us of the call)",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: %(default)s)",
    )
