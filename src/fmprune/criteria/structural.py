"""Criteria that score a whole group from the graph around it (the next layer, the group's
BatchNorms) rather than one producer's filters and feature maps.

They implement :meth:`GroupCriterion.score_group`. One-shot pruning and the sensitivity analysis
call it directly; in the map-by-map loop (``fmprune prune``) the engine reaches it as a calibration
probe named like the criterion (``engine/general/probes.py``), and :func:`producer_scores` shares a group's
score among its producers so the default sum over producers gives it back.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..data import Split
from ..graph import Graph
from .base import READS_ALL, Criterion, LayerContext


class GroupCriterion(Criterion):
    """Base class of criteria that need the graph: override :meth:`score_group`."""

    reads = READS_ALL | {"graph"}   # beyond what the chain fast path computes: the general path runs them

    def score_group(self, graph: Graph, name: str, calibration: Split, seed: int = 0) -> torch.Tensor:
        """One score per map of group ``name`` (current numbering), lower = prune first."""
        raise NotImplementedError

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return ctx.probe(self.name)


def map_positions(graph: Graph, name: str) -> list[dict[str, dict[str, list[int]]]]:
    """For every map of group ``name`` (current numbering), where it sits in each layer of the group
    (what the next layer reads of it, which norm scales it)."""
    return [graph.positions(name, [j]) for j in range(graph.group(name).size)]


def producer_scores(criterion: GroupCriterion, graph: Graph, split: Split, layer: str) -> torch.Tensor:
    """Scores of the output positions of producer ``layer`` from ``criterion``'s group scores."""
    return share_among_producers(graph, layer, lambda name: criterion.score_group(graph, name, split))


def share_among_producers(graph: Graph, layer: str, group_scores: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Scores of the output positions of producer ``layer`` from one score per group map
    (``group_scores(group)``): each map's score divided among the positions that carry it across
    the group's producers, so the default sum over producers gives it back (0 outside any group)."""
    out: torch.Tensor | None = None
    for name in graph.names:
        members = graph.members(name)
        mine = [m for m in members if m.name == layer]
        if not mine:
            continue
        scores = group_scores(name).double()
        counts = torch.zeros(len(scores), dtype=torch.float64)
        for m in members:
            inside = m.index >= 0
            counts.index_add_(0, m.index[inside], torch.ones(int(inside.sum()), dtype=torch.float64))
        index = mine[0].index
        out = torch.zeros(len(index), dtype=torch.float64) if out is None else out
        inside = index >= 0
        out[inside] = scores[index[inside]] / counts[index[inside]].clamp_min(1)
    if out is None:
        raise ValueError(f"layer {layer!r} produces no prunable group's maps")
    return out


def group_probe(quantity: str):
    """``compute(graph, split, layer)`` for a probe named like a registered group criterion, else None."""
    cls = Criterion.registry.get(quantity)
    if cls is None or not issubclass(cls, GroupCriterion):
        return None
    criterion = cls()
    return lambda graph, split, layer: producer_scores(criterion, graph, split, layer)
