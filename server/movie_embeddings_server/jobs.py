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


def refusal(exc: errors.ServiceError) -> dict[str, Any]:
    """A domain error as JSON, for the server to raise again (`refused_error`)."""
    args = [exc.field, exc.description] if isinstance(exc, errors.InvalidArgument) else [str(exc)]
    return {"error": type(exc).__name__, "args": args}


def refused_error(refused: dict[str, Any]) -> errors.ServiceError:
    kind = getattr(errors, refused["error"])
    assert issubclass(kind, errors.ServiceError)
    return kind(*refused["args"])
