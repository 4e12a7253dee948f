"""What every engine shares: raw scores per group, turned into final scores (normalisation, FLOPs
term) and a selection, and a selection removed group by group.

An engine subclass computes ``raw_scores`` and keeps them exact across ``remove``; how it does so
(autograd on any graph, cached chain activations) is its own business.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..criteria import (CalibrationProvider, Criterion, LayerContext, Scores, flops_regularize, mflops, normalize,
                        per_cost, reduce_members)
from ..errors import FmpruneError
from ..graph import Graph, Member
from ..latency import LatencyTable
from ..seeding import independent_generator
from .selection import Selected, round_selection, select_minimum


class EngineBase:
    """Scores, selects and removes maps of ``graph``'s groups in ``scope``."""

    def __init__(self, graph: Graph, criterion: Criterion, scope: list[str], normalization: str = "none",
                 flops_lambda: float = 0.0, seed: int = 0) -> None:
        criterion.check_scope(graph, scope)          # a group it cannot score: refused now, not mid-run
        self.graph, self.criterion, self.scope = graph, criterion, scope
        self.normalization, self.flops_lambda = normalization, flops_lambda
        self.generator = independent_generator("scores", seed)   # random scores: reproducible, not the init stream
        self.raw: dict[str, torch.Tensor | None] = {name: None for name in scope}
        self.per_cost = "none"     # "macs"/"params"/"latency": a map's score is divided by what removing it saves
        self.latency: LatencyTable | None = None   # the latency term and per-cost latency read it
        self.latency_lambda = 0.0  # the latency term: Θ − λ·(ms one removal saves), like eq. 9's FLOPs
        self.round_to = 1          # every group's size stays a multiple of it (or its original size)

    def raw_scores(self) -> Scores:
        """The criterion's score of every map in scope, recomputing only what a removal invalidated."""
        raise NotImplementedError

    def remove(self, group: str, maps: Sequence[int], optimizer: torch.optim.Optimizer | None = None) -> None:
        """Physically remove ``maps`` (current indices) of ``group`` and keep every cache exact."""
        raise NotImplementedError

    def accuracy(self) -> float:
        raise NotImplementedError

    def score_groups(self, names: Sequence[str], provider: CalibrationProvider, reduction: str = "sum") -> None:
        """Score groups ``names`` into ``raw``: the criterion scores each producer of a group from
        what ``provider`` computed, and the producers' scores combine by ``reduction``. The general
        engine and the in-loop :class:`fmprune.Pruner` both score through here, so one group gets
        the same score whichever fed the provider (an fx replay or the user's own backward)."""
        for name in names:
            per_member = []
            members = self.graph.members(name)
            if not members:
                if not self.criterion.reads <= WEIGHTS_ONLY:
                    raise FmpruneError(f"group {name!r} has no feature maps (attention heads): criterion "
                                       f"{self.criterion.name!r} cannot score it; leave it out of the scope or "
                                       "use a weight criterion (l1_filter, min_weight)")
                members = self.graph.members(name, feature_maps=False)
            for m in members:
                ctx = LayerContext(m.name, m.module, len(m.index), map_numel(m),
                                   lambda m=m: m.adapter.filters(m.module), provider, self.generator)
                with torch.no_grad():
                    per_member.append((self.criterion.score_layer(ctx).detach().flatten().cpu(), m.index))
            self.raw[name] = reduce_members(per_member, self.graph.group(name).size, reduction)

    def invalidate_all(self) -> None:
        """Forget every score and cache (the weights changed, e.g. by retraining)."""
        self.raw = {name: None for name in self.scope}

    def final_scores(self) -> Scores:
        """Raw scores after per-group normalisation, FLOPs regularisation (eq. 9), the latency
        term (the same form, in milliseconds from the latency table) and, with ``per_cost``,
        division by the cost a removal saves."""
        scores = normalize(self.raw_scores(), self.normalization)
        uses_latency = self.per_cost == "latency" or self.latency_lambda != 0
        if uses_latency and self.latency is None:
            raise FmpruneError("per-cost latency and the latency term need a latency table (fmprune.latency_table)")
        saved_ms = {n: self.latency.map_saving(self.graph, n) for n in self.scope} if uses_latency else {}
        if self.per_cost != "none":
            scores = per_cost(scores, {n: (*self.graph.map_cost(n), saved_ms.get(n, 0.0)) for n in self.scope},
                              self.per_cost)
        if self.latency_lambda != 0:
            scores = flops_regularize(scores, saved_ms, self.latency_lambda)
        if self.flops_lambda == 0:
            return scores
        costs = {n: mflops(self.graph.map_cost(n)[1]) for n in self.scope}
        return flops_regularize(scores, costs, self.flops_lambda)

    def select(self, k: int = 1) -> list[Selected]:
        """The ``k`` lowest-scoring maps; with ``round_to``, whole chunks (possibly a few more)."""
        final = self.final_scores()
        if self.round_to == 1:
            return select_minimum(final, self.alive, k)
        return self.round(select_minimum(final, self.alive, sum(len(v) for v in final.values())), k)

    def round(self, ordered: list[Selected], k: int) -> list[Selected]:
        """``ordered`` (lowest first) taken in chunks keeping groups at allowed sizes."""
        return round_selection(ordered, {n: self.graph.group(n).size for n in self.scope}, self.round_to, k)

    @property
    def alive(self) -> dict[str, list[int]]:
        return {n: self.graph.alive(n) for n in self.graph.names}

    def remove_selected(self, chosen: list[Selected], optimizer: torch.optim.Optimizer | None = None) -> None:
        """Remove a selection group by group (one surgery per group)."""
        for group in dict.fromkeys(s.layer for s in chosen):
            self.remove(group, [s.index for s in chosen if s.layer == group], optimizer)


WEIGHTS_ONLY = frozenset({"weights"})


def data_free_scope(graph: Graph, names: list[str], criterion: Criterion) -> tuple[list[str], list[str]]:
    """``names`` without the groups a data-reading criterion cannot score (no feature maps), and
    those left out."""
    if criterion.reads <= WEIGHTS_ONLY:
        return names, []
    kept = [n for n in names if graph.members(n)]
    return kept, [n for n in names if n not in kept]


def map_numel(member: Member) -> int:
    """Positions per map of ``member``'s feature map (H·W for a conv, 1 for a Linear, the tokens
    of a channels-last block): every axis but the batch and the channel axis."""
    if member.feature_node is None:
        return 1
    shape = tuple(member.feature_node.meta.get("tensor_meta").shape)
    n = 1
    for i, d in enumerate(shape[1:], start=1):
        if i != member.axis % len(shape):
            n *= d
    return n


def channels_first(value: torch.Tensor, axis: int) -> torch.Tensor:
    """``value`` with its channel axis at 1, as criteria expect (N×C×... or N×C); a view."""
    return value if value.dim() < 2 or axis % value.dim() == 1 else value.movedim(axis, 1)


def grad_dot(grad: torch.Tensor, value: torch.Tensor, axis: int = 1) -> torch.Tensor:
    """Σ over each map's positions of grad · value, per example: N×C, the Taylor product. One
    contraction (half the time of multiplying, then summing the product written to memory)."""
    grad, value = channels_first(grad, axis), channels_first(value, axis)
    if grad.dtype != torch.float32 or value.dtype != torch.float32:
        grad, value = grad.float(), value.float()
    if grad.dim() <= 2:
        return grad * value
    return torch.einsum("ncl,ncl->nc", grad.flatten(2), value.flatten(2))
