"""Choosing what to prune: exact counts, deterministic order.

Every selection zeroes or removes exactly ``round(amount * size)`` elements (Python's
``round``, as ``torch.nn.utils.prune`` does, so the two agree element for element). Candidates
are ranked by a score with a *stable* sort: equal scores go in index order (layers in model
order, then flat index), so the same model always gives the same masks. Elements pruned in an
earlier round score below everything else and are chosen first, which makes masks cumulative
(Han's iterative schedule never revives a weight)."""

from __future__ import annotations

import torch

from ..engine.selection import lowest
from ..errors import PruningError

SCOPES = ("layer", "global")
WEIGHT_METHODS = ("magnitude", "random")
ALREADY_PRUNED = -1.0   # below any magnitude (>= 0) and any uniform draw (>= 0)


def check_amount(amount: float) -> None:
    if not 0 <= amount < 1:
        raise PruningError(f"amount must be a fraction in [0, 1), got {amount}")


def check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise PruningError(f"unknown scope {scope!r} (available: {', '.join(SCOPES)})")


def prune_count(amount: float, size: int) -> int:
    """How many of ``size`` elements an ``amount`` prunes (half to even, like torch)."""
    return round(amount * size)


def _scores(weights: dict[str, torch.Tensor], keep: dict[str, torch.Tensor] | None, method: str,
            generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    if method not in WEIGHT_METHODS:
        raise PruningError(f"unknown weight pruning method {method!r} (available: {', '.join(WEIGHT_METHODS)})")
    out = {}
    for name, w in weights.items():
        w = w.detach().float().cpu()
        s = w.abs() if method == "magnitude" else torch.rand(w.shape, generator=generator)
        if keep is not None and name in keep:
            s = torch.where(keep[name].cpu().bool(), s, torch.tensor(ALREADY_PRUNED))
        out[name] = s
    return out


def _mask_from(shape: torch.Size, pruned: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(shape).flatten()
    mask[pruned] = 0
    return mask.view(shape)


def weight_masks(weights: dict[str, torch.Tensor], amount: float, scope: str = "layer",
                 method: str = "magnitude", generator: torch.Generator | None = None,
                 keep: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A 0/1 float mask per tensor (CPU) that zeroes exactly ``round(amount * size)`` weights of
    each tensor (``scope="layer"``) or of all of them together (``"global"``).

    ``magnitude`` zeroes the smallest ``|w|``; ``random`` draws the same counts from
    ``generator``. ``keep`` holds earlier masks: their zeros stay zero and count towards the
    amount (it must not be smaller than what is already pruned)."""
    check_amount(amount)
    check_scope(scope)
    scores = _scores(weights, keep, method, generator)
    if scope == "layer":
        return {n: _mask_from(s.shape, lowest(s, prune_count(amount, s.numel()))) for n, s in scores.items()}
    flat = torch.cat([s.flatten() for s in scores.values()]) if scores else torch.zeros(0)
    global_mask = _mask_from(flat.shape, lowest(flat, prune_count(amount, flat.numel())))
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = global_mask[start:start + s.numel()].view(s.shape).clone()
        start += s.numel()
    return out


def unit_norms(weight: torch.Tensor) -> torch.Tensor:
    """L2 norm of each output unit's incoming weights (a Linear row, a conv filter)."""
    return weight.detach().float().cpu().flatten(1).norm(dim=1)


def select_units(norms: dict[str, torch.Tensor], amount: float, scope: str = "layer",
                 original: dict[str, int] | None = None) -> dict[str, list[int]]:
    """Units to remove (current indices, sorted) so that ``round(amount * units)`` of the
    ``original`` units are gone, per layer or over all layers together, smallest norm first.

    ``original`` gives each layer's size before any removal (default: the sizes now), so an
    iterative schedule can ask for the next fraction of a model already shrunk. Removing every
    unit of a layer would cut the network in two: that is refused naming the layer."""
    check_amount(amount)
    check_scope(scope)
    original = original or {n: len(v) for n, v in norms.items()}
    if scope == "layer":
        out = {}
        for name, v in norms.items():
            target = prune_count(amount, original[name])
            if target >= original[name]:
                raise PruningError(f"amount {amount} would remove all {original[name]} units of layer {name!r}")
            count = max(0, target - (original[name] - len(v)))
            out[name] = sorted(lowest(v, count).tolist())
        return out
    flat = torch.cat([v for v in norms.values()]) if norms else torch.zeros(0)
    total, now = sum(original.values()), len(flat)
    picked = lowest(flat, max(0, prune_count(amount, total) - (total - now))).tolist()
    out, start = {}, 0
    for name, v in norms.items():
        mine = sorted(i - start for i in picked if start <= i < start + len(v))
        if len(mine) == len(v):
            raise PruningError(f"amount {amount} over all layers would remove every unit of layer {name!r}; "
                               "use --scope layer or a smaller amount")
        out[name] = mine
        start += len(v)
    return out
