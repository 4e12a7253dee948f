"""Catching an optimizer left holding parameters that surgery replaced.

Removing maps gives the cut layers new, smaller parameter tensors. An optimizer passed to
``Pruner.step(optimizer=...)`` is pointed at them; any other optimizer built before the step
keeps the old tensors, and training it afterwards updates nothing the model uses — silently,
since the old tensors still get stepped. A global optimizer pre-step hook (installed at the first
removal, once per process) turns that into a one-line error at the first ``optimizer.step()``
that would update a replaced tensor, before anything is changed. (A tensor is "replaced" when it
leaves the pruned model; one tied into a second model as well, an odd case, is refused there too.)
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch import nn

from ..errors import FmpruneError

_replaced: dict[int, tuple[weakref.ref, str]] = {}   # id of an old parameter -> (its ref, its name)
_hook: Any = None


def parameters_by_id(model: nn.Module) -> dict[int, tuple[str, nn.Parameter]]:
    """``model``'s parameters now, to compare with after a removal."""
    return {id(p): (name, p) for name, p in model.named_parameters()}


def mark_replaced(before: dict[int, tuple[str, nn.Parameter]], model: nn.Module) -> None:
    """Remember the parameters of ``before`` that ``model`` no longer holds (surgery replaced
    them), so a later step of an optimizer still holding one is refused."""
    now = {id(p) for p in model.parameters()}
    for key, (name, p) in before.items():
        if key not in now:
            _replaced[key] = (weakref.ref(p, lambda _, k=key: _replaced.pop(k, None)), name)
    _install()


def stale_names(optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of the replaced parameters ``optimizer`` still holds."""
    names: dict[int, str] = {}          # by id: a tensor listed twice is one tensor
    for group in optimizer.param_groups:
        for p in group["params"]:
            entry = _replaced.get(id(p))
            if entry is not None and entry[0]() is p:
                names[id(p)] = entry[1]
    return list(names.values())


def _refuse_stale(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if not _replaced:
        return
    names = stale_names(optimizer)
    if names:
        raise FmpruneError(
            f"{type(optimizer).__name__}.step(): it still holds {len(names)} parameter tensor(s) that "
            f"fmprune.Pruner.step() replaced when it removed maps ({', '.join(names[:3])}"
            f"{', …' if len(names) > 3 else ''}), so it would train tensors the model no longer uses; "
            "pass optimizer= to Pruner.step() (its parameters and state follow the surgery) or build a "
            "new optimizer after each step")


def _install() -> None:
    global _hook
    if _hook is None:
        _hook = register_optimizer_step_pre_hook(_refuse_stale)
