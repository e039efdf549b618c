"""The gRPC contract passes `buf lint` and stays wire- and source-compatible with its v1 release.

protos/baseline/movie_embeddings_v1.binpb is a buf image of the contract as first released
(see protos/baseline/README.md); `buf breaking` compares the current protos with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "protos" / "baseline" / "movie_embeddings_v1.binpb"
PROTO = Path("protos") / "movie_embeddings" / "v1" / "movie_embeddings.proto"
TIMEOUT = 120  # seconds; buf takes well under one here


def buf() -> str:
    """The buf CLI of the dev extra (buf-bin), beside the interpreter."""
    path = shutil.which("buf", path=os.path.dirname(sys.executable))
    if path is None:
        pytest.fail("buf not found beside the interpreter: pip install -e '.[dev]' (buf-bin)")
    return path


def run_buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [buf(), *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def test_buf_lint_passes() -> None:
    result = run_buf("lint")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_baseline_is_the_v1_contract() -> None:
    """The baseline is an image of movie_embeddings.v1 (an empty image would pass anything)."""
    image = descriptor_pb2.FileDescriptorSet.FromString(BASELINE.read_bytes())
    files = {f.name: f for f in image.file}
    v1 = files["movie_embeddings/v1/movie_embeddings.proto"]
    assert v1.package == "movie_embeddings.v1"
    assert [s.name for s in v1.service] == ["MovieEmbeddingService"]
    assert len(v1.message_type) > 20


def test_no_breaking_change_since_v1() -> None:
    result = run_buf("breaking", "--against", str(BASELINE))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# (old text, new text, rule buf must report, words its message must contain)
BREAKING_EDITS = {
    "field-type": (
        "  // Version number, from 1. 0 = the newest ready version. Negative is invalid.\n"
        "  int64 version = 2;\n",
        "  // Version number, from 1. 0 = the newest ready version. Negative is invalid.\n"
        "  string version = 2;\n",
        "FIELD_SAME_TYPE",
        ["version", "ModelRef"],
    ),
    "field-deleted": (
        "  // Score under the request's metric; higher is nearer.\n  float score = 2;\n",
        "",
        "FIELD_NO_DELETE",
        ["score", "Neighbor"],
    ),
    "field-renumbered": (
        "  int32 num_movies = 6;\n",
        "  int32 num_movies = 40;\n",
        "FIELD_NO_DELETE",
        ["num_movies", "ModelInfo"],
    ),
}


@pytest.mark.parametrize("edit", BREAKING_EDITS.values(), ids=BREAKING_EDITS.keys())
def test_breaking_check_catches_an_incompatible_edit(
    tmp_path: Path, edit: tuple[str, str, str, list[str]]
) -> None:
    old, new, rule, words = edit
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy2(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / PROTO
    text = proto.read_text()
    assert text.count(old) == 1, f"the edit no longer applies: {old!r}"
    proto.write_text(text.replace(old, new))

    assert run_buf("lint", cwd=tmp_path).returncode == 0  # still a valid, clean proto
    result = run_buf("breaking", "--against", str(BASELINE), "--error-format", "json", cwd=tmp_path)
    assert result.returncode != 0, "buf breaking accepted an incompatible edit"
    violations = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    named = [
        v
        for v in violations
        if v["type"] == rule
        and v["path"] == PROTO.as_posix()
        and all(word in v["message"] for word in words)
    ]
    assert named, result.stdout + result.stderr
