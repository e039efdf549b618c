"""House style: ruff (format and lint) and mypy pass on the project's code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["server", "client", "tests", "scripts", "benchmarks"]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "format", "--check", *SOURCES],
        ["ruff", "check", *SOURCES],
        ["mypy", "server", "client"],
    ],
    ids=["ruff-format", "ruff-check", "mypy"],
)
def test_tool_passes(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
