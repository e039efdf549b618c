"""The committed generated code is exactly what scripts/generate_protos.py writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "client" / "movie_embeddings" / "v1"


def test_regenerated_code_is_byte_identical(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = sorted(p.name for p in (tmp_path / "movie_embeddings" / "v1").iterdir())
    committed = sorted(p.name for p in GENERATED.iterdir() if "_pb2" in p.name)
    assert (
        fresh
        == committed
        == [
            "movie_embeddings_pb2.py",
            "movie_embeddings_pb2.pyi",
            "movie_embeddings_pb2_grpc.py",
            "movie_embeddings_pb2_grpc.pyi",
        ]
    )
    for name in fresh:
        new = (tmp_path / "movie_embeddings" / "v1" / name).read_bytes()
        assert new == (GENERATED / name).read_bytes(), (
            f"{name} differs: run scripts/generate_protos.py"
        )


def test_every_message_field_and_enum_value_is_commented() -> None:
    """DESIGN.md: a comment on every message, field and enum value of the contract."""
    proto = (ROOT / "protos" / "movie_embeddings" / "v1" / "movie_embeddings.proto").read_text()
    lines = proto.splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        text = line.strip()
        declares = text.startswith(("message ", "enum ", "oneof ", "rpc ", "service ")) or (
            text.endswith(";") and "=" in text and not text.startswith(("syntax", "option"))
        )
        if declares and not lines[i - 1].strip().startswith("//"):
            uncommented.append(text)
    assert uncommented == []
