"""The `movie-embeddings` command: run the server, or call it through the SDK."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import movie_embeddings as me

from . import datasets, export, models, plot, query, serve, train
from .common import UsageError, connect


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line, as every other error: `error: ...`, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="movie-embeddings",
        description="Train movie embedding models on generated data or your own ratings, and "
        "serve them over gRPC; every command but `serve` calls a running server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {me.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (serve, train, datasets, query, export, plot, models):
        group.add_commands(sub)
    return parser


def _error(exc: me.MovieEmbeddingsError, target: str) -> str:
    code = exc.code.name if exc.code else "ERROR"
    message = " ".join(str(exc).split())  # gRPC's details may span lines; errors take one
    if isinstance(exc, me.Unavailable):
        message += f"; is the server running at {target}?"
    return f"error: {code}: {message}"


def run(args: argparse.Namespace) -> int:
    if not args.connect:
        return args.handler(args) or 0
    with connect(args) as client:
        return args.handler(client, args) or 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except me.MovieEmbeddingsError as exc:
        print(_error(exc, getattr(args, "target", "")), file=sys.stderr)
        return 1
    except (UsageError, ValueError) as exc:
        # ValueError: refused by the SDK before sending (e.g. an id beyond int32).
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) has gone: stop quietly, as the Python docs advise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # e.g. a file that cannot be written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
