"""Activation statistics: how often a map is zero (APoZ) and how much it varies (S.d.)."""

from __future__ import annotations

import torch

from .base import Criterion, LayerContext


def _per_map(a: torch.Tensor) -> torch.Tensor:
    """Feature maps N×C×H×W (or N×C) as C rows of every value over examples and positions."""
    return a.transpose(0, 1).flatten(1)


class ApozCriterion(Criterion):
    """1 − APoZ: the share of non-zero activations of the map after its ReLU; mostly-zero maps go first."""

    name = "apoz"
    display_name = "APoZ"
    paper = "Hu et al. 2016, Network Trimming: A Data-Driven Neuron Pruning Approach (arXiv:1607.03250)"
    reads = frozenset({"weights", "activations"})

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return (_per_map(ctx.activation) != 0).double().mean(1)


class ActivationStdCriterion(Criterion):
    """Standard deviation of the map's activation over examples and positions; flat maps go first."""

    name = "activation_std"
    display_name = "Activation S.d."
    paper = "Molchanov et al. 2017 (ICLR), the activation S.d. baseline of its Table 2"
    reads = frozenset({"weights", "activations"})

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return _per_map(ctx.activation).double().std(1, correction=0)
