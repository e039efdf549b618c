"""The `movie-embeddings` command: run the server, or call it through the SDK."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import movie_embeddings as me

from . import config
from .security import TOKEN_ENV

DEFAULT_DATA_DIR = "data"


def _ids(text: str) -> list[int]:
    """Comma-separated movie ids: "3,14,15"."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return out
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(_jsonable(value), indent=2))


def _model_arg(args: argparse.Namespace) -> me.ModelRef:
    return me.ModelRef(args.model, args.version)


def _describe(info: me.ModelInfo) -> str:
    s, t = info.synthetic, info.training
    metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(info.metrics.items()))
    return (
        f"{info.name} v{info.version}  created {info.create_time:%Y-%m-%d %H:%M:%S}Z  "
        f"{s.num_watchers} watchers x {s.num_movies} movies, {s.num_types} types, seed {s.seed}  "
        f"preset {t.preset}, dim {t.embedding_dim}, hidden {t.hidden_units}, "
        f"{t.epochs} epochs, batch {t.batch_size}, lr {t.learning_rate:g}  {metrics}"
    )


def _progress_line(p: me.TrainProgress, width: int = 30) -> str:
    done = int(width * p.epoch / max(p.epochs, 1))
    val = "" if p.val_loss is None else f" val_loss {p.val_loss:.4f}"
    return (
        f"[{'#' * done}{'.' * (width - done)}] epoch {p.epoch}/{p.epochs} "
        f"loss {p.loss:.4f}{val} {p.elapsed_seconds:.1f}s"
    )


# One flag per TrainRequest field; unset = the server's default (the preset's).
LIMIT_HELP = {
    "max_cells": "num_watchers x num_movies (RESOURCE_EXHAUSTED)",
    "max_epochs": "epochs (INVALID_ARGUMENT)",
    "max_embedding_dim": "embedding_dim (INVALID_ARGUMENT)",
    "max_hidden_units": "hidden_units (INVALID_ARGUMENT)",
}

TRAIN_OPTIONS: list[tuple[str, Callable[[str], Any], str]] = [
    ("--num-watchers", int, "watchers to generate (default: 1000)"),
    ("--num-movies", int, "movies in the catalogue (default: 80)"),
    ("--num-types", int, "watcher types = movie groups (default: 10)"),
    ("--seed", int, "generator seed (default: random, recorded in the model)"),
    ("--embedding-dim", int, "length of a movie vector (default: 5)"),
    ("--hidden-units", int, "units of the hidden relu layer (default: 32)"),
    ("--epochs", int, "passes over the data (default: 24; notebook 10)"),
    ("--batch-size", int, "watchers per gradient step (default: 64; notebook 32)"),
    ("--learning-rate", float, "Adam's (initial) learning rate (default: 0.02; notebook 0.001)"),
    ("--validation-fraction", float, "share of watchers held out for val_loss (default: 0)"),
    (
        "--embedding-initializer",
        str,
        "Keras initialiser of the embedding kernel (default: zeros; notebook glorot_uniform)",
    ),
    ("--embedding-l2", float, "L2 penalty on the embedding kernel (default: 0.015; notebook 0)"),
    (
        "--early-stopping-patience",
        int,
        "epochs without a better val_loss before stopping and "
        "restoring the best weights; 0 = off (default: 0)",
    ),
]


def cmd_serve(args: argparse.Namespace) -> None:
    from .app import ServerConfig, serve

    serve(
        ServerConfig(
            data_dir=Path(args.data_dir),
            host=args.host,
            port=args.port,
            max_workers=args.max_workers,
            max_concurrent_trains=args.max_concurrent_trains,
            limits=config.Limits(
                **{f.name: getattr(args, f.name) for f in dataclasses.fields(config.Limits)}
            ),
            grace_seconds=args.grace_seconds,
            max_message_bytes=args.max_message_bytes,
            tls_cert=_path(args.tls_cert),
            tls_key=_path(args.tls_key),
            tls_client_ca=_path(args.tls_client_ca),
            auth_token=args.auth_token,
            auth_all=args.auth_all,
            access_log=args.access_log,
            metrics_port=args.metrics_port,
            poll_seconds=args.poll_seconds,
            server_id=args.server_id,
        )
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _read(value: str | None) -> bytes | None:
    return Path(value).read_bytes() if value else None


def cmd_train(client: me.Client, args: argparse.Namespace) -> None:
    info: me.ModelInfo | None = None
    tty = sys.stderr.isatty()
    settings = {
        option[2:].replace("-", "_"): getattr(args, option[2:].replace("-", "_"))
        for option, _, _ in TRAIN_OPTIONS
    }
    for event in client.train(
        args.model,
        preset=args.preset,
        learning_rate_schedule=args.learning_rate_schedule,
        **settings,
        timeout=args.timeout,
    ):
        if isinstance(event, me.TrainProgress):
            # A live bar on a terminal; one line per epoch when piped to a log.
            print(
                ("\r" if tty else "") + _progress_line(event),
                end="" if tty else "\n",
                file=sys.stderr,
                flush=True,
            )
        else:
            info = event
    if tty:
        print(file=sys.stderr)
    assert info is not None, "the Train stream ended without a model"
    if args.json:
        _print_json(info)
    else:
        print(f"trained {_describe(info)}")


def cmd_vector(client: me.Client, args: argparse.Namespace) -> None:
    if args.all:
        ids, matrix = client.movie_vectors(model=_model_arg(args))
    else:
        if args.movie_id is None:
            raise SystemExit("vector: give MOVIE_ID or --all")
        ids = np.array([args.movie_id])
        matrix = client.movie_vector(args.movie_id, model=_model_arg(args))[None, :]
    if args.round is not None:
        matrix = np.round(matrix.astype(np.float64), args.round)  # float32 can't hold 0.09
    if args.json:
        _print_json(
            [{"movie_id": int(i), "vector": row} for i, row in zip(ids, matrix, strict=True)]
        )
    elif args.all:
        with np.printoptions(suppress=True, threshold=sys.maxsize):
            print(repr(matrix))
    else:
        print(" ".join(f"{x:g}" for x in matrix[0]))


def cmd_nearest(client: me.Client, args: argparse.Namespace) -> None:
    neighbors = client.nearest_movies(
        args.movie_id, k=args.k, metric=args.metric, exclude=args.exclude, model=_model_arg(args)
    )
    if args.json:
        _print_json(neighbors)
        return
    print(f"{'movie_id':>8}  score ({args.metric})")
    for n in neighbors:
        print(f"{n.movie_id:>8}  {n.score:.6f}")


def cmd_reconstruct(client: me.Client, args: argparse.Namespace) -> None:
    ratings = None
    if args.ratings_file:
        ratings = np.loadtxt(args.ratings_file, delimiter=",", dtype=np.float32, ndmin=1)
    result = client.reconstruct(
        args.liked or (),
        ratings=ratings,
        age_years=args.age,
        education=args.education,
        top_k=args.top_k,
        model=_model_arg(args),
    )
    if args.json:
        _print_json(result)
        return
    print("probabilities: " + " ".join(f"{p:.3f}" for p in result.probabilities))
    if result.recommendations:
        print(f"{'movie_id':>8}  probability")
        for r in result.recommendations:
            print(f"{r.movie_id:>8}  {r.probability:.4f}")


def cmd_plot(client: me.Client, args: argparse.Namespace) -> None:
    try:
        from . import plot
    except ImportError as exc:
        raise SystemExit(
            f"plot needs matplotlib: pip install 'movie-embeddings[plot]' ({exc})"
        ) from exc
    info = client.get_model(_model_arg(args))
    ids, matrix = client.movie_vectors(model=info.ref)
    purity = info.metrics.get("neighbour_purity", float("nan"))
    plot.draw(
        Path(args.output),
        f"{info.name} v{info.version}: {info.training.preset} preset, "
        f"neighbour purity {purity:.2f}",
        ids,
        matrix,
        info.synthetic.num_types,
        [p.loss for p in info.history],
        [p.val_loss for p in info.history],
    )
    print(f"wrote {args.output}")


def cmd_models(client: me.Client, args: argparse.Namespace) -> None:
    models = client.list_models(args.name)
    if args.json:
        _print_json(models)
        return
    if not models:
        print("no models")
    for info in models:
        print(_describe(info))


def cmd_health(client: me.Client, args: argparse.Namespace) -> int:
    status = client.health(args.service)
    print(json.dumps({"status": status}) if args.json else status)
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="movie-embeddings",
        description="Train the notebook's movie embedding model and serve it over gRPC; "
        "every command but `serve` calls a running server.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the gRPC server",
        description=(
            "Run the gRPC server. With an empty data dir it first trains the `default` model "
            "(seed 42); health reports SERVING once a model is ready."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument(
        "--port",
        type=int,
        default=50051,
        help="port to bind; 0 = any free port (default: %(default)s)",
    )
    serve.add_argument(
        "--data-dir",
        default=os.environ.get("MOVIE_EMBEDDINGS_DATA_DIR", DEFAULT_DATA_DIR),
        help="model store directory, created if missing "
        "(default: $MOVIE_EMBEDDINGS_DATA_DIR or ./%(default)s)",
    )
    serve.add_argument(
        "--max-workers",
        type=int,
        default=None,
        help="threads answering RPCs; each Train or health Watch stream holds one while it "
        "lasts (default: one per core plus --max-concurrent-trains; more threads contend "
        "for Python's GIL and answer fewer calls per second)",
    )
    serve.add_argument(
        "--max-concurrent-trains",
        type=int,
        default=1,
        help="trainings allowed at once; more get RESOURCE_EXHAUSTED (default: %(default)s)",
    )
    for limit in dataclasses.fields(config.Limits):
        serve.add_argument(
            f"--{limit.name.replace('_', '-')}",
            type=int,
            default=limit.default,
            help=f"cap on a Train's {LIMIT_HELP[limit.name]}; more is refused "
            "(default: %(default)s)",
        )
    serve.add_argument(
        "--grace-seconds",
        type=float,
        default=5.0,
        help="time in-flight calls get to finish on SIGTERM/SIGINT (default: %(default)s)",
    )
    serve.add_argument(
        "--max-message-bytes",
        type=int,
        default=4 * 2**20,
        help="largest request or response; larger ones fail RESOURCE_EXHAUSTED "
        "(default: %(default)s, gRPC's own)",
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
        help="require 'authorization: Bearer TOKEN' on Train (default: $" + TOKEN_ENV + "; "
        "prefer the variable: a flag shows in the process list)",
    )
    serve.add_argument(
        "--auth-all",
        action="store_true",
        help="require the token on every RPC of the service (health and reflection stay open)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on http://HOST:PORT/metrics (HOST is --host; 0 picks a "
        "free port, logged at start; default: off)",
    )
    serve.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="how often to read --data-dir for versions other processes (replicas sharing "
        "the store) wrote, and load them (default: %(default)s)",
    )
    serve.add_argument(
        "--server-id",
        default="",
        help="this replica's name, sent with every answer as 'server-id' trailing metadata "
        "(default: HOSTNAME-PID)",
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

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target",
        default=me.DEFAULT_TARGET,
        help="server address HOST:PORT, several as HOST1:PORT1,HOST2:PORT2, or a DNS name "
        "with several addresses; calls are spread round-robin (default: %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help="bearer token sent on every call (default: $" + TOKEN_ENV + ")",
    )
    common.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    common.add_argument("--tls-ca", help="PEM CA certificate(s) to trust (implies --tls)")
    common.add_argument("--tls-cert", help="PEM client certificate for mutual TLS (implies --tls)")
    common.add_argument("--tls-key", help="PEM private key of --tls-cert")
    common.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="deadline of the call in seconds (default: 30 for queries, none for train)",
    )

    def with_model(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--model", default="default", help="model name (default: %(default)s)")
        p.add_argument(
            "--version",
            type=int,
            default=0,
            help="model version; 0 = newest (default: %(default)s)",
        )
        return p

    train = sub.add_parser(
        "train",
        parents=[common],
        help="train a new model version, with a progress bar",
        description="Train a new version of a model on freshly generated synthetic data, "
        "with a live progress bar, then print its metrics. Options not given take the "
        "preset's values (see TrainingConfig in the .proto).",
    )
    train.add_argument(
        "--model", default="default", help="model name to add a version to (default: %(default)s)"
    )
    for option, kind, text in TRAIN_OPTIONS:
        train.add_argument(option, type=kind, default=None, help=text)
    train.add_argument(
        "--preset",
        choices=["default", "notebook"],
        default=None,
        help="base settings: the improved default, or the notebook's exactly "
        "(glorot init, 10 epochs, batch 32, lr 0.001) (default: default)",
    )
    train.add_argument(
        "--learning-rate-schedule",
        choices=["constant", "cosine"],
        default=None,
        help="learning rate throughout, or decayed to 0 along a half cosine "
        "(default: cosine; notebook constant)",
    )

    vector = with_model(
        sub.add_parser(
            "vector",
            parents=[common],
            help="print a movie's vector",
            description="Print row MOVIE_ID of the embedding kernel, or every row.",
        )
    )
    vector.add_argument(
        "movie_id", metavar="MOVIE_ID", type=int, nargs="?", help="movie id, from 0"
    )
    vector.add_argument(
        "--all", action="store_true", help="print the whole kernel (one row per movie)"
    )
    vector.add_argument("--round", type=int, default=None, help="round to this many decimals")

    nearest = with_model(
        sub.add_parser(
            "nearest",
            parents=[common],
            help="print the movies nearest to a movie",
            description="Print the K movies nearest to MOVIE_ID, best first.",
        )
    )
    nearest.add_argument("movie_id", metavar="MOVIE_ID", type=int, help="movie id, from 0")
    nearest.add_argument(
        "--k", type=int, default=10, help="number of neighbours (default: %(default)s)"
    )
    nearest.add_argument(
        "--metric",
        choices=["cosine", "dot", "euclidean"],
        default="cosine",
        help="scoring; higher is nearer (default: %(default)s)",
    )
    nearest.add_argument(
        "--exclude", type=_ids, default=[], help="comma-separated movie ids never to return"
    )

    rec = with_model(
        sub.add_parser(
            "reconstruct",
            parents=[common],
            help="run the model on one watcher",
            description="Print the like-probability of every movie for one watcher, "
            "and the --top-k most probable movies it has not liked.",
        )
    )
    source = rec.add_mutually_exclusive_group()
    source.add_argument(
        "--liked", type=_ids, help="comma-separated ids of the movies the watcher liked"
    )
    source.add_argument(
        "--ratings-file", help="file of comma-separated ratings in [0, 1], one per movie"
    )
    rec.add_argument("--age", type=float, required=True, help="age in years")
    rec.add_argument(
        "--education", type=int, required=True, help="education level (0..5 in the notebook's data)"
    )
    rec.add_argument(
        "--top-k",
        type=int,
        default=10,
        help="recommendations to print; 0 = none (default: %(default)s)",
    )

    plot_cmd = with_model(
        sub.add_parser(
            "plot",
            parents=[common],
            help="draw a model's movie vectors and loss curves to a PNG",
            description="Draw, in one figure, the movie vectors projected to 2-D (PCA), each "
            "labelled with its id and coloured by its group (id %% num_types), and the loss "
            "and val_loss per epoch. Needs matplotlib: pip install 'movie-embeddings[plot]'.",
        )
    )
    plot_cmd.add_argument("--output", required=True, help="PNG file to write")

    models = sub.add_parser(
        "models",
        parents=[common],
        help="list the stored model versions",
        description="List stored model versions with their configs and metrics.",
    )
    models.add_argument("--name", default=None, help="only versions of this model")

    health = sub.add_parser(
        "health",
        parents=[common],
        help="check the server's health; exit 0 only when SERVING",
        description="Call the gRPC health service (grpc.health.v1 Check) and print the status; "
        "exit 0 when SERVING, 1 otherwise (NOT_SERVING, unknown service, unreachable). "
        "For container and load-balancer health checks.",
    )
    health.add_argument(
        "--service",
        default="",
        help="service to check: '' (default) is the whole server; "
        "movie_embeddings.v1.MovieEmbeddingService the embedding service",
    )
    return parser


CLIENT_COMMANDS = {
    "train": cmd_train,
    "vector": cmd_vector,
    "nearest": cmd_nearest,
    "reconstruct": cmd_reconstruct,
    "models": cmd_models,
    "plot": cmd_plot,
    "health": cmd_health,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        if bool(args.tls_cert) != bool(args.tls_key):
            parser.error("serve: --tls-cert and --tls-key go together")
        if args.tls_client_ca and not args.tls_cert:
            parser.error("serve: --tls-client-ca needs --tls-cert and --tls-key")
        logging.basicConfig(
            level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        cmd_serve(args)
        return 0
    timeout = args.timeout if args.timeout is not None else me.client.DEFAULT_TIMEOUT
    try:
        with me.Client(
            args.target,
            timeout=timeout,
            token=args.token,
            tls=args.tls,
            root_certificates=_read(args.tls_ca),
            certificate_chain=_read(args.tls_cert),
            private_key=_read(args.tls_key),
        ) as client:
            return CLIENT_COMMANDS[args.command](client, args) or 0
    except me.MovieEmbeddingsError as exc:
        code = exc.code.name if exc.code else "ERROR"
        print(f"error: {code}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # refused by the SDK before sending (e.g. an id beyond int32)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) has gone: stop quietly, as the Python docs advise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
