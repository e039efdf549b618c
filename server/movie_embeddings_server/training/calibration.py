"""How well Reconstruct's probabilities are calibrated: predicted against observed, by decile.

A stored dataset version keeps its held-out watchers (heldout.npz). Each has a share of its
likes folded in (ranking.HELD_SHARE held back, the same fold-in as the version's own
figures); every movie not folded in is a cell with the model's probability of a like and
whether the watcher liked it (a held-back like). The cells are ranked by probability and
cut into ten groups of equal count: in each, the mean probability against the share of
cells liked. Calibrated probabilities make the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.inference import ServedModel, Watchers
from ..store.loaded import read_version
from . import ranking, rows
from .rows import Likes

HELDOUT = "heldout.npz"  # a dataset version's held-out watchers (written by training/worker.py)
MAX_CELLS = 20_000_000  # watchers x movies measured: the first watchers up to this many cells
DECILES = 10


@dataclass(frozen=True)
class Decile:
    cells: int
    predicted: float  # the mean probability of its cells
    observed: float  # the share of its cells that are held-back likes


def of_version(directory: Path) -> list[Decile]:
    """The calibration of the dataset version stored in `directory`, on its held-out
    watchers, folded in as its own figures were (its dataset seed)."""
    model = read_version(directory, directory.parent.name, 0)
    with np.load(directory / HELDOUT) as stored:
        likes = Likes(stored["indptr"], stored["columns"], model.num_movies)
        watchers = rows.Watchers(stored["watcher_ids"], stored["age_years"], stored["education"])
    return by_decile(model, likes, watchers, model.meta["dataset"]["seed"])


def by_decile(model: ServedModel, likes: Likes, watchers: rows.Watchers, seed: int) -> list[Decile]:
    """The calibration of `model` on `watchers` and their `likes`, folded in as the version's
    figures were measured with `seed`."""
    folded, held = likes.fold_in(ranking.HELD_SHARE, seed)
    first = np.arange(min(len(likes), max(1, MAX_CELLS // model.num_movies)))
    ages, education = ranking.features_as_trained(model, watchers.take(first))
    inputs = folded.dense(first)
    probabilities = model.forward(Watchers(inputs, ages, education))
    cells = inputs == 0  # the folded-in likes are the watcher's input, not predictions
    predicted = probabilities[cells]
    observed = held.dense(first)[cells]
    order = np.argsort(predicted, kind="stable")
    return [
        Decile(
            len(part),
            float(predicted[part].mean(dtype=np.float64)),
            float(observed[part].mean(dtype=np.float64)),
        )
        for part in np.array_split(order, DECILES)
        if len(part)
    ]
