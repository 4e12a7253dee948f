"""One pruning round and Han et al.'s iterative schedule: prune to the final amount in equal
steps, retraining after each with the masks held, so the network adapts to each cut before the
next (Han, Pool, Tran, Dally 2015, "Learning both weights and connections")."""

from __future__ import annotations

import torch
from torch import nn

from .masks import apply_masks, current_mask, effective
from .select import weight_masks


def round_amounts(amount: float, rounds: int) -> list[float]:
    """The cumulative amount after each of ``rounds`` equal steps (the last is ``amount``)."""
    return [amount * r / rounds for r in range(1, rounds + 1)]


def prune_weights(model: nn.Module, layers: list[str], amount: float, scope: str = "layer",
                  method: str = "magnitude", generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Mask ``layers`` so that ``amount`` of their weights are zero (per layer or together),
    keeping every weight an earlier round pruned; returns the new masks."""
    modules = {name: model.get_submodule(name) for name in layers}
    weights = {name: effective(m) for name, m in modules.items()}
    keep = {name: mask for name, m in modules.items() if (mask := current_mask(m)) is not None}
    masks = weight_masks(weights, amount, scope, method, generator, keep)
    apply_masks(model, masks)
    return masks
