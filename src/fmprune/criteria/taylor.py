"""The Taylor criterion of Molchanov et al. 2017 (eq. 8)."""

from __future__ import annotations

import torch

from .base import Criterion, LayerContext


class TaylorCriterion(Criterion):
    """Molchanov et al. 2017, eq. 8: |(1/M) Σ_m dC/dz_m · z_m| per example, averaged over examples."""

    name = "taylor"
    paper = "Molchanov et al. 2017, Pruning Convolutional Neural Networks for Resource Efficient Inference (ICLR)"

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return (ctx.grad_dot_activation / ctx.map_numel).abs().mean(0)
