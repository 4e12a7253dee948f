"""Optimal Brain Damage (LeCun et al. 1990) per map: the diagonal second-order saliency
½ Σ h_kk θ_k² over the map's filter and bias. ``obd`` takes h from the empirical Fisher
(1/N) Σ_n (∂C_n/∂θ)², deterministic; ``obd_hutchinson`` from Hutchinson's unbiased but noisy
estimate of the true Hessian diagonal, E[v ⊙ Hv] over Rademacher v (``samples`` Hessian-vector
products per calibration chunk). ``fmprune.engine.general.probes`` documents both."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FmpruneError
from ..layers import adapter_for
from .base import READS_ALL, Criterion, LayerContext

PAPER = "LeCun, Denker & Solla 1990, Optimal Brain Damage (NIPS)"


def per_map_sum(module: nn.Module, name: str, values: torch.Tensor, n_maps: int, layer: str) -> torch.Tensor:
    """Sum a parameter-shaped tensor over everything but the output-map axis of ``module``."""
    adapter = adapter_for(module)
    axis = adapter.output_axis(module, name) if adapter is not None else 0
    rows = values.transpose(0, axis) if axis else values
    if rows.dim() == 0 or rows.shape[0] != n_maps:
        raise FmpruneError(f"obd cannot tell which parameters of layer {layer!r} ({type(module).__name__}) "
                           "make which of its maps")
    return rows.reshape(n_maps, -1).sum(1)


class ObdCriterion(Criterion):
    """½ Σ h·θ² over the map's filter and bias (Optimal Brain Damage), h the empirical Fisher diagonal."""

    name = "obd"
    display_name = "OBD"
    paper = PAPER
    reads = READS_ALL | {"hessian"}

    def diagonal(self, ctx: LayerContext) -> dict[str, torch.Tensor]:
        return ctx.probe("fisher_diagonal")

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        params = dict(ctx.module.named_parameters(recurse=False))
        total = torch.zeros(ctx.n_maps, dtype=torch.float64)
        for name, h in self.diagonal(ctx).items():
            saliency = 0.5 * h.double() * params[name].detach().double().square()
            total += per_map_sum(ctx.module, name, saliency, ctx.n_maps, ctx.name).cpu()
        return total


class ObdHutchinsonCriterion(ObdCriterion):
    """½ Σ h·θ² over the map's filter and bias, h Hutchinson's estimate of the Hessian diagonal (noisy)."""

    name = "obd_hutchinson"
    display_name = "OBD (Hutchinson)"
    samples = 32   # Hessian-vector products per calibration chunk

    def diagonal(self, ctx: LayerContext) -> dict[str, torch.Tensor]:
        return ctx.probe("hessian_diagonal", samples=self.samples, generator=ctx.generator)
