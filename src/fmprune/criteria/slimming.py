"""Network slimming (Liu et al. 2017): a map is as important as its BatchNorm scale |γ|."""

from __future__ import annotations

import torch

from ..baselines.structure import group_norm_scale
from ..data import Split
from ..graph import Graph
from .structural import GroupCriterion


class SlimmingCriterion(GroupCriterion):
    """|γ| of the BatchNorm scaling the map (summed over a group's norms); train with --bn-l1 first."""

    name = "slimming"
    display_name = "Slimming |γ|"
    paper = "Liu et al. 2017, Learning Efficient Convolutional Networks through Network Slimming (ICCV)"

    def score_group(self, graph: Graph, name: str, calibration: Split, seed: int = 0) -> torch.Tensor:
        return group_norm_scale(graph, name)
