"""One figure of a model: its movie vectors in 2-D (PCA) by group, and its loss curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt


def pca_2d(matrix: np.ndarray) -> np.ndarray:
    """Rows projected on the two leading principal components (zeros past the rank)."""
    centred = matrix - matrix.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:2].T
    return np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))


def draw(
    path: Path,
    title: str,
    ids: np.ndarray,
    matrix: np.ndarray,
    num_types: int,
    loss: Sequence[float],
    val_loss: Sequence[float | None],
) -> None:
    """Write a PNG: movie vectors coloured by group m % num_types, and loss per epoch."""
    points = pca_2d(matrix.astype(np.float64))
    groups = ids % num_types
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6), constrained_layout=True)
    cmap = plt.get_cmap("tab10" if num_types <= 10 else "tab20")
    scatter = left.scatter(points[:, 0], points[:, 1], c=groups, cmap=cmap, s=40)
    for movie_id, (x, y) in zip(ids.tolist(), points, strict=True):
        left.annotate(str(movie_id), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    left.set(title="Movie vectors (PCA)", xlabel="component 1", ylabel="component 2")
    fig.colorbar(scatter, ax=left, label="group (movie id % num_types)")
    epochs = np.arange(1, len(loss) + 1)
    right.plot(epochs, loss, marker="o", label="loss")
    if any(v is not None for v in val_loss):
        right.plot(
            epochs, [np.nan if v is None else v for v in val_loss], marker="o", label="val_loss"
        )
    right.set(title="Binary cross-entropy per epoch", xlabel="epoch", ylabel="nats per movie")
    right.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
