"""Reconstruct's probabilities against what held-out watchers liked, by decile of probability.

    python benchmarks/calibration.py DATA_DIR/MODEL/VERSION [...]

For each stored dataset version (a directory under a server's --data-dir), its held-out
watchers with the version's own fold-in (training/calibration.py): the cells (watcher, movie
not folded in) ranked by predicted probability and cut into ten groups of equal count; in
each, the mean predicted probability and the share of cells the watcher liked. Prints a
Markdown table per version; nothing here asserts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from movie_embeddings_server.training import calibration


def table(deciles: list[calibration.Decile]) -> str:
    lines = [
        "| decile | cells | mean predicted | observed like rate | predicted / observed |",
        "|---|---|---|---|---|",
    ]
    for i, d in enumerate(deciles, 1):
        ratio = f"{d.predicted / d.observed:.2f}" if d.observed else "-"
        lines.append(f"| {i} | {d.cells:,} | {d.predicted:.3g} | {d.observed:.3g} | {ratio} |")
    cells = sum(d.cells for d in deciles)
    predicted = sum(d.predicted * d.cells for d in deciles) / cells
    observed = sum(d.observed * d.cells for d in deciles) / cells
    lines.append(
        f"| all | {cells:,} | {predicted:.3g} | {observed:.3g} | {predicted / observed:.2f} |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", type=Path, nargs="+", help="DATA_DIR/MODEL/VERSION")
    args = parser.parse_args()
    for directory in args.versions:
        print(f"{directory}\n\n{table(calibration.of_version(directory))}\n")


if __name__ == "__main__":
    main()
