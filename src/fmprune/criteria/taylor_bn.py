"""First-order Taylor expansion on BatchNorm scale and shift (Molchanov et al. 2019)."""

from __future__ import annotations

import torch

from ..errors import FmpruneError
from ..graph import Graph
from ..graph.chains import norm_node
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

    def check_scope(self, graph: Graph, names: list[str]) -> None:
        modules = dict(graph.model.named_modules())
        for name in names:
            for member in graph.members(name):
                if norm_node(member, modules) is None:
                    raise FmpruneError(no_norm_message(member.name))


def no_norm_message(layer: str) -> str:
    return (f"layer {layer!r} has no BatchNorm between it and its feature map: taylor_bn needs one "
            "(leave it out of the scope, or use weight_grad or taylor)")
