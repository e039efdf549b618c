"""`models` and `health`: what the server holds, and whether it serves."""

from __future__ import annotations

import argparse
import json
from typing import Any

import movie_embeddings as me

from .common import client_command, print_json


def describe(info: me.ModelInfo) -> str:
    """One line: the version, its data, how it was trained, and its metrics."""
    t = info.training
    metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(info.metrics.items()))
    return (
        f"{info.name} v{info.version}  created {info.create_time:%Y-%m-%d %H:%M:%S}Z  "
        f"{_data(info)}  "
        f"preset {t.preset}, dim {t.embedding_dim}, hidden {t.hidden_units}, "
        f"{t.epochs} epochs, batch {t.batch_size}, lr {t.learning_rate:g}  {metrics}"
    )


def _data(info: me.ModelInfo) -> str:
    """What the version learned from: the generated data, or a dataset and what was kept."""
    if (s := info.synthetic) is not None:
        return (
            f"{s.num_watchers} watchers x {s.num_movies} movies, {s.num_types} types, seed {s.seed}"
        )
    if (d := info.dataset) is not None:
        return (
            f"dataset {d.dataset.name} v{d.dataset.version}: {info.num_train_watchers} watchers "
            f"(+{info.num_heldout_watchers} held out) x {info.num_movies} movies, "
            f"likes >= {d.like_threshold:g}, seed {d.seed}"
        )
    return "no data recorded"


def cmd_models(client: me.Client, args: argparse.Namespace) -> None:
    models = client.list_models(args.name)
    if args.json:
        print_json(models)
        return
    if not models:
        print("no models")
    for info in models:
        print(describe(info))


def cmd_health(client: me.Client, args: argparse.Namespace) -> int:
    status = client.health(args.service)
    print(json.dumps({"status": status}) if args.json else status)
    return 0 if status == "SERVING" else 1


def add_commands(sub: Any) -> None:
    models = client_command(
        sub,
        "models",
        cmd_models,
        help="list the stored model versions",
        description="List stored model versions with their data, configs and metrics.",
    )
    models.add_argument("--name", default=None, help="only versions of this model")

    health = client_command(
        sub,
        "health",
        cmd_health,
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
