"""Calibration quantities beyond feature maps and Taylor products, for the criteria that need them:

* ``loss_change`` — the oracle: the change of the mean cross-entropy on the calibration set when
  one group map is removed alone (:mod:`.masked` measures it, batched and without changing the model).
* ``grad_dot_output`` / ``grad_dot_norm`` — per example and map, Σ z·dC/dz at a producer's own
  output (before its norm) or at its BatchNorm's output. For a layer whose map is linear in its own
  filter and bias this equals Σ_filter w·dC/dw (Euler's theorem), and at a BatchNorm output it
  equals γ·dC/dγ + β·dC/dβ: the weight-gradient and BatchNorm-scale Taylor criteria read them.
* ``fisher_diagonal`` — the empirical Fisher approximation of the Hessian diagonal of the mean loss
  with respect to each producer's parameters, (1/N) Σ_n (∂C_n/∂θ)², from per-example gradients
  (``torch.func.vmap``): deterministic, exact for what it is; the Hessian's own curvature terms
  are dropped (they vanish where the model fits the data). Read by Optimal Brain Damage.
* ``hessian_diagonal`` — Hutchinson's estimate of the diagonal of the Hessian of the mean loss
  with respect to each producer's parameters: E[v ⊙ Hv] over Rademacher vectors v (entries ±1),
  one Hessian-vector product (double backward) per sample and calibration chunk, the vectors of
  all producers drawn together. Unbiased; its noise falls as 1/√samples (slowly: with a few dozen samples two seeds still rank LeNet's maps quite
  differently). Read by ``obd_hutchinson``.

Everything is computed once per scoring round for all layers asked for, in eval mode, with
in-place ops run out of place.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import fx
from torch.func import functional_call, grad, vmap

from ...criteria.structural import group_probe, share_among_producers
from ...criteria.taylor_bn import no_norm_message
from ...data import Split
from ...errors import FmpruneError
from ...graph import Graph, Member
from ...graph.chains import norm_node, producer_chain
from ...modes import logits_of
from ..engine_base import grad_dot
from .masked import group_loss_change
from .replay import Recorder, replaying

CHUNK = 250                 # calibration examples per forward/backward
FISHER_BUDGET = 1 << 26     # floats of per-example gradients held at once


class CalibrationProbes:
    """The quantities above for the producers ``members`` (name -> Member) of ``graph`` on a
    calibration split; results are cached until the object is dropped (one scoring round)."""

    def __init__(self, graph: Graph, split: Split, members: dict[str, Member]) -> None:
        self.graph, self.split, self.members = graph, split, members
        self.gm = graph.graph_module
        self.modules = dict(self.gm.named_modules())
        self._cache: dict[tuple, object] = {}

    # -- the one entry point criteria use (through LayerContext.probe)
    def get(self, layer: str, quantity: str, **options) -> torch.Tensor:
        group_criterion = group_probe(quantity)   # a criterion scoring whole groups from the graph (thinet, slimming)
        if group_criterion is not None:
            key = ("group", quantity, layer)
            if key not in self._cache:
                self._cache[key] = group_criterion(self.graph, self.split, layer)
            return self._cache[key]
        if quantity == "loss_change":
            return self.loss_change(layer)
        if quantity in ("grad_dot_output", "grad_dot_norm"):
            return self.grad_dot(layer, "norm" if quantity == "grad_dot_norm" else "output")
        if quantity == "fisher_diagonal":
            return self.fisher_diagonal(layer)
        if quantity == "hessian_diagonal":
            return self.hessian_diagonal(layer, int(options.get("samples", 8)), options.get("generator"))
        raise FmpruneError(f"unknown calibration quantity {quantity!r} (known: loss_change, grad_dot_output, "
                           "grad_dot_norm, fisher_diagonal, hessian_diagonal)")

    # -- the oracle
    def loss_change(self, layer: str) -> torch.Tensor:
        """For every output position of ``layer``: the change of the mean calibration loss when
        the group map it belongs to is removed, shared among the positions of that map across the
        group's producers (so the default sum over producers gives the change itself)."""
        return share_among_producers(self.graph, layer, self._group_delta)

    def _group_delta(self, group: str) -> torch.Tensor:
        key = ("loss_change", group)
        if key not in self._cache:
            self._cache[key] = group_loss_change(self.graph, self.split, group)
        return self._cache[key]

    # -- gradients at a producer's output or its BatchNorm
    def grad_dot(self, layer: str, where: str) -> torch.Tensor:
        key = ("grad_dot", where)
        if key not in self._cache:
            self._cache[key] = self._compute_grad_dot(where)
        found = self._cache[key]
        if layer not in found:
            raise FmpruneError(no_norm_message(layer))
        return found[layer]

    def _compute_grad_dot(self, where: str) -> dict[str, torch.Tensor]:
        nodes: dict[str, fx.Node] = {}
        for name, m in self.members.items():
            node = producer_chain(m)[0] if where == "output" else norm_node(m, self.modules)
            if node is not None:
                nodes[name] = node
        parts: dict[str, list[torch.Tensor]] = defaultdict(list)
        if not nodes:
            return {}
        model = self.graph.model
        with replaying(model), torch.enable_grad():
            for start in range(0, len(self.split), CHUNK):
                x = self.split.images[start:start + CHUNK]
                y = self.split.labels[start:start + CHUNK]
                recorder = Recorder(self.gm, set(nodes.values()))
                loss = F.cross_entropy(logits_of(recorder.run(x)), y, reduction="sum")
                wanted = list(dict.fromkeys(nodes.values()))
                grads = dict(zip(wanted, torch.autograd.grad(loss, [recorder.values[n] for n in wanted],
                                                             allow_unused=True)))
                for name, node in nodes.items():
                    v, g = recorder.values[node].detach(), grads[node]
                    g = torch.zeros_like(v) if g is None else g.detach()
                    parts[name].append(grad_dot(g, v, self.members[name].axis))
        return {name: torch.cat(p) for name, p in parts.items()}

    # -- second order
    def fisher_diagonal(self, layer: str) -> dict[str, torch.Tensor]:
        """``{"weight": ..., "bias": ...}``: (1/N) Σ_n (∂C_n/∂θ)² of the layer's own parameters."""
        if ("fisher",) not in self._cache:
            self._cache[("fisher",)] = self._compute_fisher()
        return self._cache[("fisher",)][layer]

    def _compute_fisher(self) -> dict[str, dict[str, torch.Tensor]]:
        model = self.graph.model
        chosen = {(name, pname): p.detach() for name, m in self.members.items()
                  for pname, p in m.module.named_parameters(recurse=False)}
        wanted = {f"{name}.{pname}": v for (name, pname), v in chosen.items()}
        fixed = {k: v.detach() for k, v in [*model.named_parameters(), *model.named_buffers()] if k not in wanted}

        def loss_one(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = logits_of(functional_call(model, {**fixed, **params}, (x[None],)))
            return F.cross_entropy(logits, y[None])

        per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
        step = max(1, min(CHUNK, FISHER_BUDGET // max(1, sum(v.numel() for v in wanted.values()))))
        diag = {k: torch.zeros_like(v) for k, v in wanted.items()}
        with replaying(model):
            for start in range(0, len(self.split), step):
                grads = per_example(wanted, self.split.images[start:start + step],
                                    self.split.labels[start:start + step])
                for k, g in grads.items():
                    diag[k] += g.square().sum(0)
        out: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        for (name, pname) in chosen:
            out[name][pname] = diag[f"{name}.{pname}"] / max(1, len(self.split))
        return out

    def hessian_diagonal(self, layer: str, samples: int,
                         generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """``{"weight": ..., "bias": ...}``: estimated d²L/dθ² of the layer's own parameters."""
        key = ("hessian", samples)
        if key not in self._cache:
            self._cache[key] = self._compute_hessian(samples, generator or torch.Generator().manual_seed(0))
        return self._cache[key][layer]

    def _compute_hessian(self, samples: int, generator: torch.Generator) -> dict[str, dict[str, torch.Tensor]]:
        if samples < 1:
            raise FmpruneError(f"Hessian samples must be positive, got {samples}")
        params = {(name, pname): p for name, m in self.members.items()
                  for pname, p in m.module.named_parameters(recurse=False)}
        keys, tensors = list(params), list(params.values())
        diag = [torch.zeros_like(p) for p in tensors]
        model = self.graph.model
        n_total = max(1, len(self.split))
        with replaying(model), torch.enable_grad():
            for start in range(0, len(self.split), CHUNK):
                x = self.split.images[start:start + CHUNK]
                y = self.split.labels[start:start + CHUNK]
                logits = logits_of(Recorder(self.gm, set()).run(x))
                loss = F.cross_entropy(logits, y, reduction="sum") / n_total
                grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
                live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
                for _ in range(samples):
                    vs = [(torch.randint(0, 2, tensors[i].shape, generator=generator) * 2 - 1)
                          .to(tensors[i].dtype).to(tensors[i].device) for i in live]
                    hvs = torch.autograd.grad([grads[i] for i in live], [tensors[i] for i in live], vs,
                                              retain_graph=True, allow_unused=True)
                    for i, v, hv in zip(live, vs, hvs):
                        if hv is not None:
                            diag[i] += (v * hv).detach() / samples
        out: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        for (name, pname), d in zip(keys, diag):
            out[name][pname] = d
        return out
