"""What the client commands share: connection and model options, argument types, output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

import movie_embeddings as me

from ..serving.security import TOKEN_ENV

DEFAULT_PORT = int(me.DEFAULT_TARGET.rpartition(":")[2])
TARGET_ENV = "MOVIE_EMBEDDINGS_TARGET"
_BYTE_UNITS = {"": 1, "B": 1, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_BYTE_SIZE = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")

Handler = Callable[[me.Client, argparse.Namespace], int | None]


class UsageError(Exception):
    """Arguments a command cannot work with: one `error:` line and exit code 2."""


def port(text: str) -> int:
    """A TCP port to listen on: 1..65535, or 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1..65535 (0 = any free port), got {text!r}")
    return value


def _with_port(address: str) -> str:
    """HOST:PORT for HOST, [V6]:PORT for [V6] or a bare IPv6 address; the port checked."""
    if "/" in address:  # a gRPC URI (dns:///, unix:, ipv4:...): gRPC's to read
        return address
    if address.startswith("["):
        host, _, rest = address.partition("]")
        if not rest:
            return f"{address}:{DEFAULT_PORT}"
        host, number = host + "]", rest.removeprefix(":")
    elif address.count(":") == 1:
        host, number = address.split(":")
    elif ":" in address:
        return f"[{address}]:{DEFAULT_PORT}"
    else:
        return f"{address}:{DEFAULT_PORT}"
    if not number.isdigit() or not 1 <= int(number) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1..65535, got {number!r} in {address!r}")
    return f"{host}:{int(number)}"


def target(text: str) -> str:
    """The server address(es): HOST[:PORT][,HOST[:PORT]...]; a missing port is 50051."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected HOST[:PORT][,HOST[:PORT]...], got {text!r}")
    return ",".join(_with_port(part) for part in parts)


def byte_size(text: str) -> int:
    """A size in bytes, >= 1: "4194304", "64MiB", "512KiB", "1GiB"."""
    match = _BYTE_SIZE.fullmatch(text)
    unit = _BYTE_UNITS.get(match.group(2).upper()) if match else None
    if match is None or unit is None or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a size in bytes >= 1, e.g. 4194304 or 64MiB (units KiB, MiB, GiB), "
            f"got {text!r}"
        )
    return int(match.group(1)) * unit


def movie_ids(text: str) -> list[int]:
    """Comma-separated movie ids: "3,14,15"."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc


def _checked(kind: type, ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse type: `kind(text)` when `ok` accepts it (a float must be finite)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or (kind is float and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _checked(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _checked(float, lambda v: v > 0, "a number > 0")
nonnegative_float = _checked(float, lambda v: v >= 0, "a number >= 0")
finite_float = _checked(float, lambda v: True, "a finite number")
fraction = _checked(float, lambda v: 0 <= v < 1, "a number >= 0 and < 1")


def connection_options() -> argparse.ArgumentParser:
    """The options of every command that calls a server, as a parent parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target",
        type=target,
        default=os.environ.get(TARGET_ENV, me.DEFAULT_TARGET),
        help="server address HOST[:PORT] (port 50051 when not given), several as "
        "HOST1:PORT1,HOST2:PORT2, or a DNS name with several addresses; calls are spread "
        f"round-robin (default: ${TARGET_ENV}, else {me.DEFAULT_TARGET})",
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
        type=positive_float,
        default=None,
        help="deadline of the call in seconds (default: "
        f"{me.client.DEFAULT_TIMEOUT:g} for queries, none for train and import)",
    )
    common.add_argument(
        "--max-message-bytes",
        type=byte_size,
        default=None,
        help="largest message sent or received, e.g. 64MiB (default: gRPC's, 4MiB received; "
        "whole catalogues need no more: they stream in ~1 MiB pages)",
    )
    return common


CONNECTION = connection_options()


def client_command(
    sub: Any, name: str, handler: Handler, *, model: bool = False, **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand that calls the server through `handler(client, args)`; with the model
    options (--model, --version, --label) when `model`."""
    parser: argparse.ArgumentParser = sub.add_parser(name, parents=[CONNECTION], **kwargs)
    parser.set_defaults(handler=handler, connect=True)
    if model:
        parser.add_argument("--model", default="default", help="model name (default: %(default)s)")
        parser.add_argument(
            "--version",
            type=nonnegative_int,
            default=0,
            help="model version; 0 = newest (default: %(default)s)",
        )
        parser.add_argument(
            "--label",
            default="",
            help="the version this label of the model names, e.g. stable (see `models label`; "
            "default: none, --version decides)",
        )
    return parser


def dest(flag: str) -> str:
    """Where argparse keeps a flag's value: --like-threshold -> like_threshold."""
    return flag[2:].replace("-", "_")


def model_ref(args: argparse.Namespace) -> me.ModelRef:
    return me.ModelRef(args.model, args.version, args.label)


def _read(value: str | None) -> bytes | None:
    return readable(value).read_bytes() if value else None


def connect(args: argparse.Namespace) -> me.Client:
    """The client that the connection options describe."""
    timeout = args.timeout if args.timeout is not None else me.client.DEFAULT_TIMEOUT
    return me.Client(
        args.target,
        timeout=timeout,
        token=args.token,
        tls=args.tls,
        root_certificates=_read(args.tls_ca),
        certificate_chain=_read(args.tls_cert),
        private_key=_read(args.tls_key),
        max_message_bytes=args.max_message_bytes,
    )


def readable(name: str) -> Path:
    """An existing regular file given on the command line, or a UsageError saying why not."""
    path = Path(name)
    if path.is_dir():
        raise UsageError(f"{name} is a directory, not a file")
    if not path.is_file():
        raise UsageError(f"no such file: {name}")
    return path


def writable(name: str) -> Path:
    """A file to write: its directory must exist (nothing is created on a typo)."""
    path = Path(name)
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {name}: no directory {path.parent}")
    if path.is_dir():
        raise UsageError(f"cannot write {name}: it is a directory")
    return path


def stderr_console() -> Console:
    """Where progress goes: stderr, so that stdout holds only the result (or JSON)."""
    return Console(stderr=True, highlight=False)


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def print_json(value: Any) -> None:
    print(json.dumps(jsonable(value), indent=2))


def titled(movie_id: int, title: str) -> str:
    """A movie as a person reads it: "1 Toy Story (1995)", or the id alone."""
    return f"{movie_id} {title}" if title else str(movie_id)


def eprint(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
