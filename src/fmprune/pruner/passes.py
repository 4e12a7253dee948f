"""Criteria that need passes of their own, inside the user's loop: the oracle and Optimal Brain
Damage (Hutchinson), computed from the user's ``loss_fn(model) -> loss`` (any scalar: their loss on
a calibration batch they choose) instead of the cross-entropy on fmprune's calibration split.

* ``loss_change`` (the oracle): for every map of a group, the loss with that map zeroed at the
  output of every layer of its group, minus the loss as it is; one ``loss_fn`` call per map.
* ``hessian_diagonal`` (``obd_hutchinson``): E[v ⊙ Hv] over Rademacher v, Hessian-vector products
  by double backward through ``loss_fn``; exact when the Hessian is diagonal.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..criteria.structural import share_among_producers
from ..errors import FmpruneError
from ..graph import Graph

LossFn = Callable[[nn.Module], torch.Tensor]


def scalar_loss(value: Any, who: str, grad: bool = False) -> torch.Tensor:
    """``value`` if it is a one-element tensor (with a gradient path when ``grad``); otherwise one
    line saying what ``who`` returned."""
    if not torch.is_tensor(value):
        raise FmpruneError(f"{who} must return a scalar loss tensor, got {type(value).__name__}")
    if value.numel() != 1:
        raise FmpruneError(f"{who} must return a scalar loss tensor, got a tensor of shape {tuple(value.shape)} "
                           "(reduce it: .mean() or .sum())")
    if grad and not value.requires_grad:
        raise FmpruneError(f"{who} returned a loss with no gradient path to the model (computed under "
                           "torch.no_grad() or detached?)")
    return value


class LossPasses:
    """The quantities above for ``graph``'s model, cached until the object is dropped (one round)."""

    def __init__(self, graph: Graph, loss_fn: LossFn) -> None:
        self.graph, self.loss_fn = graph, loss_fn
        self.modules = dict(graph.model.named_modules())
        self._deltas: dict[str, torch.Tensor] = {}
        self._hessian: dict[str, dict[str, torch.Tensor]] | None = None

    def _loss(self) -> float:
        return float(scalar_loss(self.loss_fn(self.graph.model), "loss_fn(model)"))

    # -- the oracle
    def loss_change(self, layer: str) -> torch.Tensor:
        return share_among_producers(self.graph, layer, self._group_delta)

    def _group_delta(self, group: str) -> torch.Tensor:
        if group not in self._deltas:
            with torch.no_grad():
                base = self._loss()
                deltas = []
                for j in range(self.graph.group(group).size):
                    with self._zeroed(group, j):
                        deltas.append(self._loss() - base)
            self._deltas[group] = torch.tensor(deltas, dtype=torch.float64)
        return self._deltas[group]

    @contextmanager
    def _zeroed(self, group: str, j: int) -> Iterator[None]:
        """Map ``j`` of ``group`` zeroed at the output of every layer of the group (channel axis 1)."""
        handles = []
        for layer, where in self.graph.positions(group, [j]).items():
            if where["out"]:
                positions = list(where["out"])
                handles.append(self.modules[layer].register_forward_hook(
                    lambda m, i, out, p=positions: _zero_channels(out, p)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    # -- Optimal Brain Damage, Hutchinson's estimate
    def hessian_diagonal(self, layer: str, samples: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self._hessian is None:
            self._hessian = self._hutchinson(samples, generator)
        if layer not in self._hessian:
            raise FmpruneError(f"layer {layer!r}: no parameters for obd_hutchinson")
        return self._hessian[layer]

    def _hutchinson(self, samples: int, generator: torch.Generator) -> dict[str, dict[str, torch.Tensor]]:
        layers = {m.name: m.module for n in self.graph.names for m in self.graph.members(n)}
        params = [(layer, name, p) for layer, module in layers.items()
                  for name, p in module.named_parameters(recurse=False) if p.requires_grad]
        tensors = [p for _, _, p in params]
        with torch.enable_grad():
            loss = self.loss_fn(self.graph.model)
            grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
            total = [torch.zeros_like(p) for p in tensors]
            for _ in range(samples):
                vs = [torch.randint(0, 2, p.shape, generator=generator).to(p) * 2 - 1 for p in tensors]
                used = [(g, v, i) for i, (g, v) in enumerate(zip(grads, vs)) if g is not None]
                hv = torch.autograd.grad([g for g, _, _ in used], [tensors[i] for _, _, i in used],
                                         grad_outputs=[v for _, v, _ in used], retain_graph=True, allow_unused=True)
                for (_, v, i), h in zip(used, hv):
                    if h is not None:
                        total[i] += v * h.detach()
        out: dict[str, dict[str, torch.Tensor]] = {}
        for (layer, name, _), t in zip(params, total):
            out.setdefault(layer, {})[name] = t / samples
        return out


def _zero_channels(out, positions: list[int]):
    if not torch.is_tensor(out) or out.dim() < 2:
        return out
    out = out.clone()
    out[:, positions] = 0
    return out
