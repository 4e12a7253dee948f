"""Scores of every map of some groups, computed once on the model as it is: what one-shot pruning
and the sensitivity analysis rank by (Li et al.'s "independent" strategy: no layer's removal
changes another layer's ranking)."""

from __future__ import annotations

import torch

from ..criteria import Criterion
from ..criteria.structural import GroupCriterion
from ..data import Split
from ..engine import create_engine
from ..graph import Graph


def group_scores(graph: Graph, criterion: Criterion, calibration: Split, scope: list[str],
                 seed: int = 0, reduction: str = "sum") -> dict[str, torch.Tensor]:
    """Raw (unnormalised) scores per group of ``scope``, lower = prune first; a group's producers
    combine by ``reduction`` as in the pruning loop."""
    if isinstance(criterion, GroupCriterion):
        return {name: criterion.score_group(graph, name, calibration, seed).double() for name in scope}
    engine = create_engine(graph, criterion, calibration, calibration, scope, "none", 0.0, seed, reduction)
    return {name: s.detach().double().clone() for name, s in engine.raw_scores().items()}
