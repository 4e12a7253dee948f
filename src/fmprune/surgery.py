"""Physical removal of feature maps: the producer's filters, bias and BatchNorm entries and the
consumer's input slices are cut out of the tensors, in place, so the model stays the same plain
``nn.Module`` (no masks, no hooks), only smaller. Optimizer state is sliced the same way so a
retraining protocol keeps its Adam moments across removals."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .errors import PruningError
from .graph.chain import Topology

Slicer = Callable[[torch.Tensor], torch.Tensor]


def keep_indices(n_maps: int, maps: Sequence[int], layer: str) -> torch.Tensor:
    """Indices of the maps that stay; refuses duplicates, out-of-range maps and emptying a layer."""
    drop = sorted(set(int(m) for m in maps))
    if len(drop) != len(maps):
        raise PruningError(f"layer {layer!r}: duplicate map indices in {list(maps)}")
    if not drop:
        raise PruningError(f"layer {layer!r}: no map to remove")
    if drop[0] < 0 or drop[-1] >= n_maps:
        raise PruningError(f"layer {layer!r}: map index out of range 0..{n_maps - 1} in {drop}")
    if len(drop) >= n_maps:
        raise PruningError(f"layer {layer!r}: cannot remove its last map ({n_maps} left)")
    mask = torch.ones(n_maps, dtype=torch.bool)
    mask[drop] = False
    return mask.nonzero().flatten()


def take(t: torch.Tensor, dim: int, index: torch.Tensor, max_runs: int = 16) -> torch.Tensor:
    """``t.index_select(dim, index)`` for sorted indices; when they form a few contiguous runs
    (removing one map leaves two) it concatenates slices, which copies memory in blocks and is
    about twice as fast on the large cached activations."""
    idx = index.tolist()
    starts = [0] + [i for i in range(1, len(idx)) if idx[i] != idx[i - 1] + 1]
    if not idx or len(starts) > max_runs or any(b < a for a, b in zip(idx, idx[1:])):
        return t.index_select(dim, index.to(t.device))
    ends = starts[1:] + [len(idx)]
    return torch.cat([t.narrow(dim, idx[a], b - a) for a, b in zip(starts, ends)], dim)


def consumer_columns(keep: torch.Tensor, factor: int) -> torch.Tensor:
    """Input columns of the consumer that belong to the kept maps (channel-major flatten)."""
    return (keep[:, None] * factor + torch.arange(factor)[None, :]).flatten()


def remove_maps(topology: Topology, layer: str, maps: Sequence[int],
                optimizer: torch.optim.Optimizer | None = None) -> torch.Tensor:
    """Remove ``maps`` (current indices) of ``layer``; return the kept indices."""
    info = topology.prunable(layer)
    producer = topology.stages[info.index]
    consumer = topology.stages[info.index + 1]
    keep = keep_indices(info.n_maps, maps, layer)
    rows: Slicer = lambda t: take(t, 0, keep)  # noqa: E731
    _slice_param(producer.module, "weight", rows, optimizer)
    _slice_param(producer.module, "bias", rows, optimizer)
    size_attr = "out_channels" if isinstance(producer.module, nn.Conv2d) else "out_features"
    setattr(producer.module, size_attr, len(keep))
    modules = dict(topology.model.named_modules())
    for norm_name in producer.norms:
        norm = modules[norm_name]
        for attr in ("weight", "bias", "running_mean", "running_var"):
            _slice_param(norm, attr, rows, optimizer)
        norm.num_features = len(keep)
    cols_idx = consumer_columns(keep, info.flatten_factor)
    cols: Slicer = lambda t: take(t, 1, cols_idx)  # noqa: E731
    _slice_param(consumer.module, "weight", cols, optimizer)
    if isinstance(consumer.module, nn.Conv2d):
        consumer.module.in_channels = len(keep)
    else:
        consumer.module.in_features = len(cols_idx)
    return keep


def _slice_param(module: nn.Module, attr: str, slicer: Slicer,
                 optimizer: torch.optim.Optimizer | None) -> None:
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
