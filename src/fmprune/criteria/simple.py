"""Criteria that need no gradients: random (the baseline), filter magnitude, mean activation."""

from __future__ import annotations

import torch

from .base import Criterion, LayerContext


class RandomCriterion(Criterion):
    """Uniformly random order (seeded): the baseline every criterion must beat."""

    name = "random"
    reads = frozenset()

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return torch.rand(ctx.n_maps, generator=ctx.generator)


class MinWeightCriterion(Criterion):
    """Sum of absolute weights of the filter producing the map (the thesis' eq. 3.1)."""

    name = "min_weight"
    reads = frozenset({"weights"})

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return ctx.weight.abs().flatten(1).sum(1)


class L1FilterCriterion(MinWeightCriterion):
    """L1 norm of each filter, Σ|w| (Li et al. 2017, "Pruning Filters for Efficient ConvNets")."""

    name = "l1_filter"
    display_name = "L1 filter"
    paper = "Li et al. 2017, Pruning Filters for Efficient ConvNets (ICLR)"


class MeanActivationCriterion(Criterion):
    """Mean activation of the map (after its norm and ReLU) over positions and calibration examples."""

    name = "mean_activation"
    reads = frozenset({"weights", "activations"})

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        a = ctx.activation
        return a.flatten(2).mean(2).mean(0) if a.dim() > 2 else a.mean(0)
