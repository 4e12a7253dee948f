"""From raw criterion scores to the numbers selection compares: per-group normalisation, the
FLOPs term, and how a group's producers combine into one score per map."""

from __future__ import annotations

import torch

from ..errors import FmpruneError
from .base import Scores

NORMALIZATIONS = ("none", "l1", "l2", "rms", "mean", "lamp")
REDUCTIONS = ("sum", "mean", "max")


def normalize(scores: Scores, how: str) -> Scores:
    """Per-group normalisation so groups with differently scaled scores compete in one ranking.

    ``l2`` is Molchanov et al.'s layer-wise ℓ2 normalisation, v / ‖v‖. It also divides by √n for a
    group of n maps (a typical entry is 1/√n), so where group sizes differ — LeNet's fc1 has 1024
    maps, its convs 32 and 64 — the largest group's maps rank lowest whatever their importance.
    ``rms`` is the same shape without that bias, v / √(mean v²): a typical entry is 1 in every
    group. ``mean`` divides by mean |v| (Torch-Pruning's default normaliser): a typical entry is
    1 too, but a heavy tail (a few maps far above the rest, as in a wide fully connected layer)
    pulls the scale up less than under ``rms``, so the group's ordinary maps are not ranked as
    if they were all unimportant. ``l1`` divides by Σ|v| (a typical entry 1/n). ``lamp``: see
    :func:`lamp`."""
    if how == "none":
        return dict(scores)
    if how == "l1":
        return {k: v / v.abs().sum().clamp_min(1e-30) for k, v in scores.items()}
    if how == "l2":
        return {k: v / v.norm().clamp_min(1e-30) for k, v in scores.items()}
    if how == "rms":
        return {k: v / v.square().mean().sqrt().clamp_min(1e-30) for k, v in scores.items()}
    if how == "mean":
        return {k: v / v.abs().mean().clamp_min(1e-30) for k, v in scores.items()}
    if how == "lamp":
        return {k: lamp(v) for k, v in scores.items()}
    raise FmpruneError(f"unknown normalisation {how!r} (available: {', '.join(NORMALIZATIONS)})")


def lamp(v: torch.Tensor) -> torch.Tensor:
    """Each score divided by the sum of the scores at or above it in its group (Lee et al. 2021,
    LAMP, applied to any criterion's scores): the group's best map scores 1, and a map scores low
    only if the maps kept above it carry nearly all of the group's importance. Unlike the
    scale normalisations it depends on the group's size and shape: a group with few maps, or
    with its importance spread evenly, is never emptied first, however small its raw scores (a
    narrow, redundant stem), and the lowest maps of a wide group rank lowest. LAMP squares
    weights to get an energy; a Taylor score is already a change of the loss, so it is used as it
    is. Ties keep index order; the denominators use |v| so a negative score stays lowest."""
    order = torch.sort(v, stable=True).indices
    above = v[order].abs().flip(0).cumsum(0).flip(0)   # Σ of the scores from this rank up
    out = torch.empty_like(v)
    out[order] = v[order] / above.clamp_min(1e-30)
    return out


def flops_regularize(scores: Scores, flops_per_map: dict[str, float], lam: float) -> Scores:
    """Θ − λ·Θ_flops (paper's eq. 9): cheaper-to-keep maps are protected, costly ones pushed out.

    Θ_flops of a group is the FLOPs (2 × MACs) per example that removing one of its maps saves
    (its own filters plus its slice of every consumer), in MFLOPs, recomputed as the network shrinks.
    """
    if lam == 0:
        return dict(scores)
    return {k: v - lam * flops_per_map[k] for k, v in scores.items()}


COSTS = ("none", "macs", "params", "latency")


def check_cost(what: str) -> str:
    """``what`` if it names a cost (none, macs, params), else a one-line error."""
    if what not in COSTS:
        raise FmpruneError(f"unknown cost {what!r} (available: {', '.join(COSTS)})")
    return what


def per_cost(scores: Scores, cost_per_map: dict[str, tuple[float, ...]], what: str) -> Scores:
    """Importance per unit of what a removal saves: each group's scores divided by the MACs (or
    params) one of its maps costs, relative to the mean over the groups. Pruning to a size target
    is a knapsack (keep the most importance within a budget); ranking by importance per cost is
    its greedy solution, so a MAC target is met by removing fewer maps, the ones that cost most
    for what they give (a conv map on a 32×32 grid against a fully connected unit).
    ``cost_per_map`` holds (params, MACs) per group, and the milliseconds a removal saves
    (:meth:`fmprune.latency.LatencyTable.map_saving`) third for ``latency``."""
    if check_cost(what) == "none":
        return dict(scores)
    column = ("params", "macs", "latency").index(what)
    floor = 1e-6 if what == "latency" else 1   # a removal the table says saves nothing: ~never worth it
    costs = {k: float(max(cost_per_map[k][column], floor)) for k in scores}
    mean = sum(costs.values()) / max(1, len(costs))
    return {k: v / (costs[k] / mean) for k, v in scores.items()}


def mflops(macs: int) -> float:
    return 2 * macs / 1e6


def reduce_members(per_member: list[tuple[torch.Tensor, torch.Tensor]], n_maps: int, how: str) -> torch.Tensor:
    """One score per group map from its producers' scores: ``per_member`` holds (scores per
    output position, group map of each position or -1). Positions of one map within one producer
    add up (a depthwise multiplier); producers combine by ``how``: sum (default), mean or max."""
    if how not in REDUCTIONS:
        raise FmpruneError(f"unknown group reduction {how!r} (available: {', '.join(REDUCTIONS)})")
    rows = []
    for scores, index in per_member:
        inside = index >= 0
        row = torch.zeros(n_maps, dtype=scores.dtype)
        rows.append(row.index_add_(0, index[inside], scores.flatten()[inside].cpu()))
    stacked = torch.stack(rows)
    if how == "sum" or len(rows) == 1:
        return stacked.sum(0) if len(rows) > 1 else stacked[0]
    return stacked.mean(0) if how == "mean" else stacked.max(0).values
