"""The one train/eval switch: code that must see inference behaviour (scoring, evaluation,
tracing, cost counting) runs under :func:`eval_mode` and leaves the model's modes as it found them."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode for the duration, each one's own train flag restored after
    (a frozen BatchNorm kept in eval inside a training model stays so)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training
