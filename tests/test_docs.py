"""The documentation: docs/ builds with `mkdocs build --strict`, and the README stays a front door.

The strict build fails on a link to a missing page or anchor, a relative link out of docs/ and a
page left out of mkdocs.yml's nav (mkdocs.yml's `validation` makes each a warning).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PROTO = ROOT / "protos" / "movie_embeddings" / "v1" / "movie_embeddings.proto"
MAX_README_LINES = 300
TIMEOUT = 300  # seconds; the build takes ~1 s


def test_the_docs_build_strictly(tmp_path: Path) -> None:
    # NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2 (stderr noise, not a warning).
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "index.html").is_file()


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def rpc_table_names(markdown: str) -> set[str]:
    """The RPC names in the first column of the table headed `| RPC |`."""
    names: set[str] = set()
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("| RPC |"):
            in_table = True
        elif in_table and line.startswith("|"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`(\w+)`", first_cell))
        elif in_table:
            break
    return names


def test_the_readme_and_the_docs_home_list_every_rpc() -> None:
    rpcs = set(re.findall(r"^\s*rpc (\w+)\(", PROTO.read_text(), re.MULTILINE))
    assert len(rpcs) >= 14
    for page in (README, ROOT / "docs" / "index.md"):
        assert rpc_table_names(page.read_text()) == rpcs, page.name
