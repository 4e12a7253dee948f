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
    index = index.to("cpu", torch.long)
    if len(index) == 0:
        return t.index_select(dim, index.to(t.device))
    step = index[1:] - index[:-1]
    if bool((step < 0).any()):
        return t.index_select(dim, index.to(t.device))
    breaks = (step != 1).nonzero().flatten() + 1          # where a new contiguous run starts
    if len(breaks) >= max_runs:
        return t.index_select(dim, index.to(t.device))
    starts = [0] + breaks.tolist()
    ends = starts[1:] + [len(index)]
    first = index[starts].tolist()
    return torch.cat([t.narrow(dim, f, b - a) for f, a, b in zip(first, starts, ends)], dim)


def slice_param(module: nn.Module, attr: str, slicer: Slicer,
                optimizer: torch.optim.Optimizer | None) -> None:
    """Replace ``module.attr`` (parameter or buffer; absent or None: nothing) by its sliced copy,
    and move the optimizer's state for it along."""
    old = getattr(module, attr, None)
    if old is None:
        return
    if not isinstance(old, nn.Parameter):  # a buffer such as running_mean
        setattr(module, attr, _own(slicer(old), old))
        return
    new = nn.Parameter(_own(slicer(old.data), old), requires_grad=old.requires_grad)
    setattr(module, attr, new)
    if optimizer is not None:
        _swap_in_optimizer(optimizer, old, new, slicer)


def _own(sliced: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``sliced`` in memory of its own: copied only when the slicer returned a view of ``source``
    (``take`` already copies; a second copy of a large weight per removal costs real time)."""
    if sliced.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
        return sliced.clone()
    return sliced


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
            k: _own(slicer(v), v) if torch.is_tensor(v) and v.shape == old.shape else v
            for k, v in state.items()
        }
