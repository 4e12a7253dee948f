"""ThiNet's baseline step after the ranking (``criteria/thinet.py``): remove the greedy choice and
rescale the kept maps' weights in the next layer by least squares,
ŵ = argmin_w Σ_samples (Σ_c x̂_c − Σ_{c∈S} w_c x̂_c)², so the kept maps make up for the removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..criteria.thinet import SAMPLES_PER_IMAGE, consumer_of, contributions, greedy_removal
from ..data import Split
from ..errors import PruningError
from ..graph import Graph


def least_squares_scales(x_kept: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ŵ minimising ‖target − x_kept ŵ‖² (float64; minimum norm when the samples do not fix it)."""
    a, b = x_kept.double(), target.double().unsqueeze(1)
    return torch.linalg.lstsq(a, b, driver="gelsd").solution.squeeze(1)


@dataclass(frozen=True)
class ThiNetResult:
    removed: list[int]        # map indices (numbering before the removal), sorted
    scales: torch.Tensor      # least-squares factor of each kept map, in kept order
    error_before: float       # Σ (Σ_{c∈T} x̂_c)²: the reconstruction error without rescaling
    error_after: float        # the residual after rescaling


@torch.no_grad()
def remove_and_rescale(graph: Graph, name: str, x: torch.Tensor, removed: list[int], rescale: bool = True,
                       optimizer: torch.optim.Optimizer | None = None) -> ThiNetResult:
    """Remove maps ``removed`` of group ``name`` and, with ``rescale``, multiply each kept map's
    weights in the next layer by its least-squares factor fitted on contributions ``x``."""
    removed = sorted(removed)
    dropped = set(removed)
    kept = [j for j in range(x.shape[1]) if j not in dropped]
    target = x.sum(1)
    scales = least_squares_scales(x[:, kept], target) if rescale else torch.ones(len(kept), dtype=torch.float64)
    error_before = float(x[:, removed].sum(1).square().sum())
    error_after = float((target - x[:, kept] @ scales).square().sum())
    graph.remove(name, removed, optimizer)
    if rescale:
        after = consumer_of(graph, name)   # positions in the shrunk numbering: kept map i is now map i
        weight = after.module.weight
        for i, positions in enumerate(after.positions):
            weight[:, positions.to(weight.device)] *= scales[i].to(weight.dtype)
    return ThiNetResult(removed, scales, error_before, error_after)


def thinet_prune(graph: Graph, name: str, n_remove: int, calibration: Split,
                 samples_per_image: int = SAMPLES_PER_IMAGE, seed: int = 0, rescale: bool = True,
                 optimizer: torch.optim.Optimizer | None = None) -> ThiNetResult:
    """Remove ``n_remove`` maps of group ``name`` chosen by ThiNet's greedy rule and rescale the
    kept maps' weights in the next layer by least squares (``rescale``)."""
    size = graph.group(name).size
    if not 0 < n_remove < size:
        raise PruningError(f"ThiNet: group {name!r} has {size} maps; remove between 1 and {size - 1}, not {n_remove}")
    x = contributions(graph, name, calibration, samples_per_image, seed)
    return remove_and_rescale(graph, name, x, greedy_removal(x, n_remove).order, rescale, optimizer)
