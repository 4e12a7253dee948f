"""First-order Taylor expansion on BatchNorm scale and shift (Molchanov et al. 2019)."""

from __future__ import annotations

import torch

from .base import READS_ALL, Criterion, LayerContext
from .weight_grad import PAPER_2019


class TaylorBNCriterion(Criterion):
    """(γ·∂L/∂γ + β·∂L/∂β)² of the BatchNorm after the map's producer, L the mean calibration loss."""

    name = "taylor_bn"
    display_name = "Taylor BN"
    paper = PAPER_2019
    reads = READS_ALL | {"parameter_gradients"}

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        # γ·∂L/∂γ + β·∂L/∂β = Σ y·∂L/∂y over the BatchNorm's output y = γ·x̂ + β
        return ctx.probe("grad_dot_norm").double().mean(0).square()
