"""How fmprune calls a model: the one train/eval switch (code that must see inference behaviour,
scoring, evaluation, tracing, cost counting, runs under :func:`eval_mode` and leaves the model's
modes as it found them), and the one reading of a model's classification output (:func:`logits_of`)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
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


def logits_of(output) -> torch.Tensor:
    """The classification output of a model that may return several values (the first tensor of
    a tuple, list or dict): a user's multi-head model is scored and evaluated on its first head."""
    if torch.is_tensor(output):
        return output
    flat = [o for o in (output.values() if isinstance(output, dict) else output) if torch.is_tensor(o)]
    return flat[0]
