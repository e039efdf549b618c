"""`plot`: a model's movie vectors and loss curves, drawn to an image file."""

from __future__ import annotations

import argparse
from typing import Any

import movie_embeddings as me

from .common import UsageError, client_command, model_ref, writable


def cmd_plot(client: me.Client, args: argparse.Namespace) -> None:
    path = writable(args.output)
    if not path.suffix:
        path = path.with_suffix(".png")  # what matplotlib writes for a name without one
    try:
        from . import figure as plot
    except ImportError as exc:
        raise UsageError(
            f"plot needs matplotlib: pip install 'movie-embeddings[plot]' ({exc})"
        ) from exc
    info = client.get_model(model_ref(args))
    ids, matrix = client.movie_vectors(model=info.ref)
    purity = info.metrics.get("neighbour_purity", float("nan"))
    plot.draw(
        path,
        f"{info.name} v{info.version}: {info.training.preset} preset, "
        f"neighbour purity {purity:.2f}",
        ids,
        matrix,
        info.synthetic.num_types if info.synthetic else 1,  # a dataset has no generated groups
        [p.loss for p in info.history],
        [p.val_loss for p in info.history],
    )
    print(f"wrote {path}")


def add_commands(sub: Any) -> None:
    plot = client_command(
        sub,
        "plot",
        cmd_plot,
        model=True,
        help="draw a model's movie vectors and loss curves to a PNG",
        description="Draw, in one figure, the movie vectors projected to 2-D (PCA), each "
        "labelled with its id and coloured by its group (id %% num_types), and the loss "
        "and val_loss per epoch. Needs matplotlib: pip install 'movie-embeddings[plot]'.",
    )
    plot.add_argument(
        "--output",
        required=True,
        help="image file to write, in its directory; the extension picks the format "
        "(.png added when there is none)",
    )
