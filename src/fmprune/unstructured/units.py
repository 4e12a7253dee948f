"""Unit pruning (the seed study's "unit" method): remove the output units (Linear rows, conv
filters) with the smallest L2 norm of their incoming weights, the next layer's inputs with them.

Physical removal goes through fmprune's dependency graph (``graph.remove``), so it works on any
model the graph can trace and slices optimizer state too. :func:`unit_masks` gives the same
choice as masks (weights and bias of each removed unit zeroed), the form
``torch.nn.utils.prune.ln_structured(n=2, dim=0)`` produces."""

from __future__ import annotations

import torch
from torch import nn

from ..graph import Graph
from .masks import apply_mask, effective
from .select import select_units, unit_norms


def layer_norms(model: nn.Module, layers: list[str]) -> dict[str, torch.Tensor]:
    """L2 norm of every unit of each layer (``layers`` name producer modules)."""
    return {name: unit_norms(effective(model.get_submodule(name))) for name in layers}


def group_norms(graph: Graph, name: str) -> torch.Tensor:
    """L2 norm of each map of a dependency group over the weights of every layer producing it
    (for a group with one producer: the norm of its rows / filters, as ``ln_structured``)."""
    squares = torch.zeros(graph.group(name).size)
    for member in graph.members(name):
        rows = member.adapter.filters(member.module)
        if rows is None:
            continue
        ours = member.index >= 0
        squares.index_add_(0, member.index[ours], rows.detach().float().cpu().pow(2).sum(1)[ours])
    return squares.sqrt()


def all_group_norms(graph: Graph, groups: list[str]) -> dict[str, torch.Tensor]:
    return {name: group_norms(graph, name) for name in groups}


def prune_units(graph: Graph, groups: list[str], amount: float, scope: str = "layer",
                original: dict[str, int] | None = None,
                optimizer: torch.optim.Optimizer | None = None) -> dict[str, list[int]]:
    """Physically remove units of ``groups`` (graph group names) until ``amount`` of their
    ``original`` units are gone; returns what was removed (indices before this call)."""
    chosen = select_units(all_group_norms(graph, groups), amount, scope, original)
    for name, indices in chosen.items():
        if indices:
            graph.remove(name, indices, optimizer)
    return chosen


def unit_masks(model: nn.Module, layers: list[str], amount: float, scope: str = "layer") -> dict[str, list[int]]:
    """Mask (zero) the units :func:`prune_units` would remove: each unit's weights and bias."""
    chosen = select_units(layer_norms(model, layers), amount, scope)
    for name, indices in chosen.items():
        module = model.get_submodule(name)
        for tensor in ("weight", "bias"):
            if getattr(module, tensor, None) is None:
                continue
            mask = torch.ones_like(effective(module, tensor))
            mask[indices] = 0
            apply_mask(module, mask, tensor)
    return chosen
