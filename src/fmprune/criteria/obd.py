"""Optimal Brain Damage (LeCun et al. 1990) per map: the diagonal second-order saliency
½ Σ h_kk θ_k² over the map's filter and bias, with the Hessian diagonal h estimated by
Hutchinson's method (E[v ⊙ Hv], Rademacher v; ``samples`` Hessian-vector products per calibration
chunk), as ``fmprune.engine.probes`` documents."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FmpruneError
from .base import READS_ALL, Criterion, LayerContext

TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def per_map_sum(module: nn.Module, name: str, values: torch.Tensor, n_maps: int, layer: str) -> torch.Tensor:
    """Sum a parameter-shaped tensor over everything but the output-map axis of ``module``."""
    transposed = name == "weight" and isinstance(module, TRANSPOSED) and module.groups == 1
    rows = values.transpose(0, 1) if transposed else values
    if rows.dim() == 0 or rows.shape[0] != n_maps:
        raise FmpruneError(f"obd cannot tell which parameters of layer {layer!r} ({type(module).__name__}) "
                           "make which of its maps")
    return rows.reshape(n_maps, -1).sum(1)


class ObdCriterion(Criterion):
    """½ Σ h·θ² over the map's filter and bias (Optimal Brain Damage), h a Hutchinson estimate of the Hessian diagonal."""

    name = "obd"
    display_name = "OBD"
    paper = "LeCun, Denker & Solla 1990, Optimal Brain Damage (NIPS)"
    reads = READS_ALL | {"hessian"}
    samples = 8   # Hutchinson samples per calibration chunk

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        diag = ctx.probe("hessian_diagonal", samples=self.samples, generator=ctx.generator)
        params = dict(ctx.module.named_parameters(recurse=False))
        total = torch.zeros(ctx.n_maps, dtype=torch.float64)
        for name, h in diag.items():
            saliency = 0.5 * h.double() * params[name].detach().double().square()
            total += per_map_sum(ctx.module, name, saliency, ctx.n_maps, ctx.name).cpu()
        return total
