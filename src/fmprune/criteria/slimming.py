"""Network slimming (Liu et al. 2017): a map is as important as its BatchNorm scale |γ|."""

from __future__ import annotations

import torch

from ..data import Split
from ..errors import PruningError
from ..graph import Graph
from ..layers import batch_norm_scale
from .structural import GroupCriterion, map_positions


class SlimmingCriterion(GroupCriterion):
    """|γ| of the BatchNorm scaling the map (summed over a group's norms); train with --bn-l1 first."""

    name = "slimming"
    display_name = "Slimming |γ|"
    paper = "Liu et al. 2017, Learning Efficient Convolutional Networks through Network Slimming (ICCV)"

    def score_group(self, graph: Graph, name: str, calibration: Split, seed: int = 0) -> torch.Tensor:
        return group_norm_scale(graph, name)

    def check_scope(self, graph: Graph, names: list[str]) -> None:
        for name in names:
            if not norm_scales(graph, name):
                raise PruningError(no_scale_message(name))


def norm_scales(graph: Graph, name: str) -> dict[str, torch.Tensor]:
    """|γ| of every BatchNorm scaling group ``name``'s maps: ``{norm layer: one value per map}``
    (a map seen at several channels of one norm adds them up). Empty when no norm has a scale."""
    out: dict[str, torch.Tensor] = {}
    per_map = map_positions(graph, name)
    if not per_map:
        return out
    for layer in per_map[0]:
        scale = batch_norm_scale(graph.model.get_submodule(layer))
        if scale is None:
            continue
        gamma = scale.detach().abs().double().cpu()
        out[layer] = torch.stack([gamma[at[layer]["out"]].sum() for at in per_map])
    return out


def no_scale_message(name: str) -> str:
    return (f"slimming: group {name!r} has no BatchNorm with a scale (γ) on its maps; "
            "leave it out of the scope or use another criterion")


def group_norm_scale(graph: Graph, name: str) -> torch.Tensor:
    """One |γ| per map of group ``name``: the sum over the BatchNorms scaling it (one norm after
    a plain producer; one per producer when a residual add ties several)."""
    scales = norm_scales(graph, name)
    if not scales:
        raise PruningError(no_scale_message(name))
    return torch.stack(list(scales.values())).sum(0)
