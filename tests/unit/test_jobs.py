"""What a Train job says: the seconds-left estimates of its progress events."""

from __future__ import annotations

import pytest

from movie_embeddings_server.jobs import seconds_left


def test_inside_an_epoch_the_rest_goes_at_its_pace() -> None:
    # Epoch 2 of 5, a quarter done in 10 s, 50 s since the start.
    epoch_left, run_left = seconds_left(2, 5, 25, 100, 10.0, 50.0)
    assert epoch_left == pytest.approx(30.0)
    # Two epochs took 50 + 30 s in all: 40 s each for the three still to come.
    assert run_left == pytest.approx(30.0 + 3 * 40.0)


def test_at_an_epochs_end_and_at_the_last_nothing_is_left_of_it() -> None:
    assert seconds_left(3, 10, 100, 100, 7.0, 30.0) == pytest.approx((0.0, 70.0))
    assert seconds_left(10, 10, 100, 100, 7.0, 100.0) == (0.0, 0.0)


def test_before_the_first_step_nothing_is_guessed() -> None:
    assert seconds_left(1, 10, 0, 100, 0.0, 0.0) == (0.0, 0.0)
