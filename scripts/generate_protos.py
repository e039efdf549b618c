"""Regenerate the committed gRPC/protobuf code and its .pyi stubs from protos/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Pinned in pyproject.toml's `dev` extra: a different grpcio-tools or mypy-protobuf
# writes different bytes, and tests/test_generated.py would fail.
ROOT = Path(__file__).resolve().parent.parent
PROTO = "movie_embeddings/v1/movie_embeddings.proto"


def generate(out_dir: Path) -> None:
    """Write movie_embeddings/v1/*_pb2*.py and .pyi under out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins live beside python
    args = [
        "grpc_tools.protoc",
        f"--proto_path={ROOT / 'protos'}",
        f"--proto_path={include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        PROTO,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "client",
        help="directory to write movie_embeddings/v1/ into (default: client/)",
    )
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
