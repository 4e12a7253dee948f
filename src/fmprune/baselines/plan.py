"""Which maps one-shot pruning removes: per-layer ratios (Li et al.), a global ranking by raw
score or a threshold on it (network slimming), and the ratio that meets a size target."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from ..engine.selection import lowest
from ..errors import FmpruneError, PruningError
from ..graph import Graph, trace

Plan = dict[str, list[int]]   # group -> map indices to remove (current numbering)


def parse_ratios(text: str) -> dict[str, float]:
    """``"conv1=0.5,conv2=0.25"`` -> ``{"conv1": 0.5, "conv2": 0.25}``; every ratio in [0, 1)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, value = part.rpartition("=")
        try:
            ratio = float(value)
        except ValueError:
            ratio = math.nan
        if not sep or not name.strip() or not 0 <= ratio < 1:
            raise FmpruneError(f"ratios: {part!r} should read LAYER=R with R in [0, 1), e.g. conv1=0.5")
        out[name.strip()] = ratio
    if not out:
        raise FmpruneError("ratios: none given (e.g. conv1=0.5,conv2=0.25)")
    return out


def format_ratios(ratios: dict[str, float]) -> str:
    return ",".join(f"{name}={ratio:g}" for name, ratio in ratios.items())


def check_ratio(ratio: float, what: str = "ratio") -> float:
    if not 0 <= ratio < 1:
        raise FmpruneError(f"{what} must be in [0, 1), got {ratio}")
    return ratio


def count_for(size: int, ratio: float) -> int:
    """Maps a layer of ``size`` loses at ``ratio``: round(ratio · size), its last map always kept."""
    return min(size - 1, int(round(ratio * size)))


def lowest_maps(scores: torch.Tensor, n: int) -> list[int]:
    """The ``n`` lowest-scoring maps (ties: lower index first), in index order."""
    return sorted(lowest(scores.double(), n).tolist())


def per_layer_plan(scores: dict[str, torch.Tensor], ratios: dict[str, float]) -> Plan:
    """Each group loses its ``ratios[group]`` lowest-scoring maps (groups not named keep all)."""
    return {name: lowest_maps(s, count_for(len(s), ratios.get(name, 0.0))) for name, s in scores.items()}


def global_plan(scores: dict[str, torch.Tensor], ratio: float | None = None,
                threshold: float | None = None) -> Plan:
    """One ranking over every map of the scope by raw score: the ``ratio`` of all maps scoring
    lowest, or every map scoring below ``threshold``; a group's best map always stays."""
    names = list(scores)
    flat = torch.cat([scores[n].double() for n in names]) if names else torch.zeros(0)
    owner = [n for n in names for _ in range(len(scores[n]))]
    index = [j for n in names for j in range(len(scores[n]))]
    order = torch.sort(flat, stable=True).indices.tolist()
    wanted = count_for(len(flat), ratio) if ratio is not None else int((flat < threshold).sum())
    left = {n: len(scores[n]) for n in names}
    plan: Plan = {n: [] for n in names}
    for k in order[:wanted]:
        name = owner[k]
        if left[name] > 1:
            left[name] -= 1
            plan[name].append(index[k])
    return {n: sorted(v) for n, v in plan.items()}


@dataclass(frozen=True)
class Size:
    params: int
    macs: int


def size_after(graph: Graph, counts: dict[str, int]) -> Size:
    """Parameters and MACs once ``counts[group]`` maps of each group are gone (which maps does not
    matter for the size), measured on a copy of the model."""
    model = copy.deepcopy(graph.model)
    shadow = trace(model, graph.example_inputs, graph.ignore)
    for name, n in counts.items():
        if n:
            shadow.remove(name, list(range(n)))
    return Size(shadow.total_params(), shadow.total_macs())


def ratio_for_target(graph: Graph, scores: dict[str, torch.Tensor], target: float, measure: str,
                     global_ranking: bool = False, resolution: int = 1000) -> float:
    """The smallest ratio (on a 1/``resolution`` grid) whose plan leaves at most ``target`` of the
    model's ``measure`` ("params" or "macs"): a uniform per-layer ratio, or a global one."""
    if not 0 < target <= 1:
        raise FmpruneError(f"target {measure} must be a fraction in (0, 1], got {target}")
    base = getattr(Size(graph.total_params(), graph.total_macs()), measure)

    def plan_for(ratio: float) -> Plan:
        return global_plan(scores, ratio) if global_ranking else per_layer_plan(scores, {n: ratio for n in scores})

    def fits(step: int) -> bool:
        counts = {n: len(v) for n, v in plan_for(step / resolution).items()}
        return getattr(size_after(graph, counts), measure) <= target * base

    low, high = 0, resolution - 1
    if not fits(high):
        smallest = getattr(size_after(graph, {n: len(s) - 1 for n, s in scores.items()}), measure)
        raise PruningError(f"target {measure} {target} ({int(target * base):,}) is below what the scope can reach "
                           f"({smallest:,} with one map per layer); raise it or widen the scope")
    while low < high:   # size only falls as the ratio grows
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    return low / resolution
