"""Tensor surgery: cut positions out of a module's parameters and buffers, in place, so the model
stays the same plain ``nn.Module`` (no masks, no hooks), only smaller. Optimizer state is sliced
the same way so a retraining protocol keeps its Adam moments and momentum across removals.

Which positions to cut is decided elsewhere (``graph``); how each layer type is cut lives in its
adapter (``layers``); this module only does the slicing.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .errors import PruningError

Slicer = Callable[[torch.Tensor], torch.Tensor]


def keep_indices(n_maps: int, maps: Sequence[int], group: str) -> torch.Tensor:
    """Indices of the maps that stay; refuses duplicates, out-of-range maps and emptying a group."""
    drop = sorted(set(int(m) for m in maps))
    if len(drop) != len(maps):
        raise PruningError(f"group {group!r}: duplicate map indices in {list(maps)}")
    if not drop:
        raise PruningError(f"group {group!r}: no map to remove")
    if drop[0] < 0 or drop[-1] >= n_maps:
        raise PruningError(f"group {group!r}: map index out of range 0..{n_maps - 1} in {drop}")
    if len(drop) >= n_maps:
        raise PruningError(f"group {group!r}: cannot remove its last map ({n_maps} left)")
    mask = torch.ones(n_maps, dtype=torch.bool)
    mask[drop] = False
    return mask.nonzero().flatten()


def take(t: torch.Tensor, dim: int, index: torch.Tensor, max_runs: int = 16) -> torch.Tensor:
    """``t.index_select(dim, index)`` for sorted indices; when they form a few contiguous runs
    (removing one map leaves two) it concatenates slices, which copies memory in blocks and is
    about twice as fast on large tensors."""
    idx = index.tolist()
    starts = [0] + [i for i in range(1, len(idx)) if idx[i] != idx[i - 1] + 1]
    if not idx or len(starts) > max_runs or any(b < a for a, b in zip(idx, idx[1:])):
        return t.index_select(dim, index.to(t.device))
    ends = starts[1:] + [len(idx)]
    return torch.cat([t.narrow(dim, idx[a], b - a) for a, b in zip(starts, ends)], dim)


def slice_param(module: nn.Module, attr: str, slicer: Slicer,
                optimizer: torch.optim.Optimizer | None) -> None:
    """Replace ``module.attr`` (parameter or buffer; absent or None: nothing) by its sliced copy,
    and move the optimizer's state for it along."""
    old = getattr(module, attr, None)
    if old is None:
        return
    if not isinstance(old, nn.Parameter):  # a buffer such as running_mean
        setattr(module, attr, slicer(old).clone())
        return
    new = nn.Parameter(slicer(old.data).clone(), requires_grad=old.requires_grad)
    setattr(module, attr, new)
    if optimizer is not None:
        _swap_in_optimizer(optimizer, old, new, slicer)


def _swap_in_optimizer(optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter,
                       slicer: Slicer) -> None:
    """Point the optimizer at ``new`` and slice every per-element state tensor (moments, momentum)."""
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
    state = optimizer.state.pop(old, None)
    if state is not None:
        optimizer.state[new] = {
            k: slicer(v).clone() if torch.is_tensor(v) and v.shape == old.shape else v
            for k, v in state.items()
        }
