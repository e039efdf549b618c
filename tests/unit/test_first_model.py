"""What a query is told while the server trains its first model: an estimate from the epochs."""

from __future__ import annotations

import re

from movie_embeddings_server.serving.app import FirstModel
from movie_embeddings_server.training.keras_model import Epoch


def _epoch(epoch: int, step: int, steps: int, elapsed: float) -> Epoch:
    return Epoch(epoch, 24, 0.5, float("nan"), elapsed, step, steps)


def test_before_any_step_it_says_it_is_starting() -> None:
    first = FirstModel()
    assert re.fullmatch(
        r"the default model is being trained; starting \(\d+ s so far\), ready in a few seconds",
        first.not_ready(),
    )
    first.progress(_epoch(1, 0, 16, 0.1))  # no step done yet: still nothing to go on
    assert "starting" in first.not_ready()


def test_the_estimate_is_the_time_per_epoch_times_the_epochs_left() -> None:
    first = FirstModel()
    first.progress(_epoch(4, 16, 16, 8.0))  # 2 s per epoch, 20 epochs left
    message = first.not_ready()
    found = re.fullmatch(
        r"the default model is being trained; ready in about (\d+) s \(epoch 4/24\)", message
    )
    assert found and 38 <= int(found.group(1)) <= 40, message
    first.progress(_epoch(24, 16, 16, 48.0))  # the last epoch: at least 1 s, never 0
    assert first.not_ready().endswith("ready in about 1 s (epoch 24/24)")


def test_inside_an_epoch_its_steps_count() -> None:
    first = FirstModel()
    first.progress(_epoch(1, 8, 16, 1.0))  # half an epoch in 1 s
    assert "ready in about 47 s" in first.not_ready()
