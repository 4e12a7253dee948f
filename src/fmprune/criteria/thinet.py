"""ThiNet (Luo et al. 2017) as a ranking criterion: the greedy reconstruction order of the next layer."""

from __future__ import annotations

import torch

from ..baselines.thinet import thinet_choice
from ..data import Split
from ..graph import Graph
from .structural import GroupCriterion


class ThiNetCriterion(GroupCriterion):
    """Next layer's reconstruction error on sampled outputs, maps chosen greedily (rank = greedy order)."""

    name = "thinet"
    display_name = "ThiNet"
    paper = "Luo et al. 2017, ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression (ICCV)"

    def score_group(self, graph: Graph, name: str, calibration: Split, seed: int = 0) -> torch.Tensor:
        return thinet_choice(graph, name, calibration, seed=seed).scores()
