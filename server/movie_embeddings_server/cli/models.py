"""`models` and `health`: list, delete and label model versions; whether the server serves."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import movie_embeddings as me

from .common import (
    UsageError,
    client_command,
    eprint,
    nonnegative_float,
    nonnegative_int,
    print_json,
)

HEALTH_POLL_SECONDS = 0.2  # between two health checks of `health --wait`


def describe(info: me.ModelInfo) -> str:
    """One line: the version, its data, how it was trained, and its metrics."""
    t = info.training
    metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(info.metrics.items()))
    labels = f" [{', '.join(info.labels)}]" if info.labels else ""
    return (
        f"{info.name} v{info.version}{labels}  created {info.create_time:%Y-%m-%d %H:%M:%S}Z  "
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


def _labels_line(name: str, labels: dict[str, int]) -> str:
    shown = ", ".join(f"{label} -> v{version}" for label, version in labels.items())
    return f"labels of {name}: {shown or 'none'}"


def _delete(client: me.Client, args: argparse.Namespace, name: str) -> None:
    deleted = client.delete_model(name, args.version or 0)
    if args.json:
        print_json(deleted)
        return
    for info in deleted:
        print(f"deleted {info.name} v{info.version}")


def _label(client: me.Client, args: argparse.Namespace, name: str, label: str) -> None:
    if (args.version is None) == (not args.remove):
        raise UsageError("models label: give --version N (N >= 1) or --remove")
    if args.version == 0:
        raise UsageError("models label: --version must be >= 1 (--remove removes the label)")
    labels = client.set_model_label(name, label, 0 if args.remove else args.version)
    if args.json:
        print_json(labels)
    else:
        print(_labels_line(name, labels))


def cmd_models(client: me.Client, args: argparse.Namespace) -> None:
    words = args.words
    if words[:1] == ["delete"] and len(words) == 2:
        _delete(client, args, words[1])
        return
    if words[:1] == ["label"] and len(words) == 3:
        _label(client, args, words[1], words[2])
        return
    if words:
        raise UsageError(
            f"models: expected `delete NAME` or `label NAME LABEL`, got {' '.join(words)!r} "
            "(--name lists one model's versions)"
        )
    if args.remove:
        raise UsageError("models: --remove goes with `label NAME LABEL`")
    models = client.list_models(args.name)
    models = [info for info in models if args.version in (None, 0, info.version)]
    if args.json:
        print_json(models)
        return
    if not models:
        print("no models")
    for info in models:
        print(describe(info))


def _health_within(client: me.Client, service: str, seconds: float) -> str:
    """The health status once SERVING, or the last one seen when `seconds` pass first; a
    server not answering yet (starting) is "UNAVAILABLE" until it answers."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        try:
            status = client.health(service, timeout=max(left, HEALTH_POLL_SECONDS))
        except (me.Unavailable, me.DeadlineExceeded):
            status = "UNAVAILABLE"
        if status == "SERVING" or left <= 0:
            return status
        time.sleep(min(HEALTH_POLL_SECONDS, max(left, 0)))


def cmd_health(client: me.Client, args: argparse.Namespace) -> int:
    if args.wait is None:
        status = client.health(args.service)
    else:
        status = _health_within(client, args.service, args.wait)
        if status != "SERVING":
            eprint(f"not SERVING within {args.wait:g} s (last: {status})")
    print(json.dumps({"status": status}) if args.json else status)
    return 0 if status == "SERVING" else 1


def add_commands(sub: Any) -> None:
    models = client_command(
        sub,
        "models",
        cmd_models,
        help="list, delete or label the stored model versions",
        description="List stored model versions with their data, configs, labels and metrics; "
        "or `models delete NAME [--version N]` deletes one version (every version without "
        "--version); or `models label NAME LABEL --version N` points a label (e.g. stable) at "
        "a version, which queries then name with --label, and `--remove` removes it. A "
        "labelled version cannot be deleted until its label is moved or removed.",
    )
    models.add_argument(
        "words",
        nargs="*",
        metavar="ACTION",
        help="nothing (list), `delete NAME` or `label NAME LABEL`",
    )
    models.add_argument("--name", default=None, help="list only versions of this model")
    models.add_argument(
        "--version",
        type=nonnegative_int,
        default=None,
        help="list or delete only this version, or the version `label` points at "
        "(default: every version; a label needs it or --remove)",
    )
    models.add_argument("--remove", action="store_true", help="`label`: remove the label")

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
        "--wait",
        type=nonnegative_float,
        default=None,
        metavar="SECONDS",
        help="wait up to SECONDS for SERVING (a server still starting, or training its "
        "first model, counts as not yet), checking every "
        f"{HEALTH_POLL_SECONDS:g} s; exit 1 if it does not come",
    )
    health.add_argument(
        "--service",
        default="",
        help="service to check: '' (default) is the whole server; "
        "movie_embeddings.v1.MovieEmbeddingService the embedding service",
    )
