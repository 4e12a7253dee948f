"""First-order Taylor expansion on the weights (Molchanov et al. 2019): (Σ_filter w·∂L/∂w)²."""

from __future__ import annotations

import torch

from .base import READS_ALL, Criterion, LayerContext

PAPER_2019 = "Molchanov et al. 2019, Importance Estimation for Neural Network Pruning (CVPR)"


class WeightGradCriterion(Criterion):
    """(Σ w·∂L/∂w over the filter and its bias)², L the mean calibration loss (Taylor-FO on weights)."""

    name = "weight_grad"
    display_name = "Weight gradient"
    paper = PAPER_2019
    reads = READS_ALL | {"parameter_gradients"}

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        # Σ_filter w·∂L/∂w = Σ z·∂L/∂z over the layer's output z (z is linear in its own filter and bias)
        return ctx.probe("grad_dot_output").double().mean(0).square()
