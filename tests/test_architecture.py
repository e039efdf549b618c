"""The layout's import rules (pyproject.toml's [tool.importlinter] contracts) hold, and each
one fails when a breach of it is planted in a copy of the packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
SERVER = "movie_embeddings_server"


def lint_imports(*, python_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if python_path is not None:  # ahead of the installed packages
        env["PYTHONPATH"] = str(python_path)
    return subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_contract_is_kept() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


# (module of the server package, a line planted in it, the contract it breaks)
BREACHES = [
    (
        "serving/app.py",
        "import tensorflow",
        "The serving process never loads TensorFlow, Keras or the trainer process's code",
    ),
    (
        "model/planted.py",
        "from ..training import rows",
        "The serving process never loads TensorFlow, Keras or the trainer process's code",
    ),
    (
        "store/planted.py",
        "from ..serving import metrics",
        "The store imports neither the serving nor the training package",
    ),
    (
        "training/planted.py",
        "import grpc",
        "Domain code knows nothing of gRPC or the wire messages",
    ),
    (
        "training/planted.py",
        "from ..serving import malloc",
        "Packages by process, each importing only the ones below it",
    ),
    (
        "config.py",
        "from .model import search",
        "Packages by process, each importing only the ones below it",
    ),
    (
        # The circle the flat layout had: rows took age_stats from the Keras module.
        "training/rows.py",
        "from . import keras_model",
        "No import circles between the modules of a package",
    ),
]


@pytest.mark.parametrize(("module", "line", "contract"), BREACHES)
def test_a_planted_breach_fails_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    shutil.copytree(ROOT / "server" / SERVER, tmp_path / SERVER)
    shutil.copytree(ROOT / "client" / "movie_embeddings", tmp_path / "movie_embeddings")
    planted = tmp_path / SERVER / module
    before = planted.read_text() if planted.exists() else '"""Planted by a test."""\n'
    planted.write_text(before + f"\n{line}  # planted\n")

    result = lint_imports(python_path=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
