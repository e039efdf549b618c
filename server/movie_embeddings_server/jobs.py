"""What a Train job says between the serving process and a trainer process: progress events
and refusals, as the JSON lines of training/worker.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import errors


@dataclass(frozen=True)
class Epoch:
    """The end of one epoch (step == steps), or progress inside one (step < steps)."""

    epoch: int
    epochs: int
    loss: float  # the epoch's mean so far
    val_loss: float  # NaN inside an epoch
    elapsed_seconds: float
    step: int
    steps: int
    epoch_seconds_left: float = 0.0  # estimates (seconds_left)
    run_seconds_left: float = 0.0


def seconds_left(
    epoch: int, epochs: int, step: int, steps: int, in_epoch: float, elapsed: float
) -> tuple[float, float]:
    """Estimated seconds left in this epoch (`step` of `steps` done in `in_epoch` seconds) and
    in the run to its epoch limit (the epochs to come at the mean epoch time so far; `elapsed`
    seconds since the run started)."""
    epoch_left = in_epoch / step * (steps - step) if 0 < step < steps else 0.0
    mean_epoch = (elapsed + epoch_left) / epoch if epoch else 0.0
    return epoch_left, epoch_left + (epochs - epoch) * mean_epoch


def refusal(exc: errors.ServiceError) -> dict[str, Any]:
    """A domain error as JSON, for the server to raise again (`refused_error`)."""
    args = [exc.field, exc.description] if isinstance(exc, errors.InvalidArgument) else [str(exc)]
    return {"error": type(exc).__name__, "args": args}


def refused_error(refused: dict[str, Any]) -> errors.ServiceError:
    kind = getattr(errors, refused["error"])
    assert issubclass(kind, errors.ServiceError)
    return kind(*refused["args"])
