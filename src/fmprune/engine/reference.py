"""The naive pruning loop, kept as the obviously-correct reference for the fast engine.

Every step it masks (zeroes the producer's filter and bias and the consumer's input slice of each
pruned map in a dense copy), runs a full autograd forward and backward over the calibration set
with gradients taken at the feature maps themselves, and a full forward over the evaluation set.
Slow by design: tests and ``benchmarks/prune_loop.py`` check the engine against it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..criteria import Criterion, flops_regularize, mflops, normalize
from ..data import Split
from ..seeding import independent_generator
from .fast.chain_engine import layer_context
from .selection import Selected, select_minimum
from ..graph.chain import Topology, trace
from ..training import accuracy, predict


class ReferenceProvider:
    """Feature maps and dC/da · a of a (masked) dense model by plain autograd."""

    def __init__(self, topology: Topology, split: Split) -> None:
        acts: list[torch.Tensor] = []
        x = split.images
        with torch.enable_grad():
            for s in topology.stages:
                a = s.activate(s.layer(x))
                a.retain_grad()
                acts.append(a)
                x = s.reduce_maps(a)
            F.cross_entropy(x, split.labels, reduction="sum").backward()
        self._names = topology.layer_names
        self._acts = acts

    def activation(self, layer: str) -> torch.Tensor:
        return self._acts[self._names.index(layer)].detach()

    def grad_dot_activation(self, layer: str) -> torch.Tensor:
        a = self._acts[self._names.index(layer)]
        prod = (a.grad * a).detach()
        return prod.flatten(2).sum(2) if prod.dim() > 2 else prod


class NaiveLoop:
    """Mask-based pruning of a dense copy of the model; same selection rule as the engine."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], criterion: Criterion,
                 eval_split: Split, calibration: Split, scope: list[str],
                 normalization: str = "none", flops_lambda: float = 0.0, seed: int = 0) -> None:
        self.model = copy.deepcopy(model).eval()
        self.topology = trace(self.model, input_shape)
        self.criterion, self.scope = criterion, scope
        self.eval_split, self.calibration = eval_split, calibration
        self.normalization, self.flops_lambda = normalization, flops_lambda
        self.generator = independent_generator("scores", seed)
        self.alive = {s.name: list(range(s.n_maps)) for s in self.topology.stages[:-1]}

    def counts(self) -> dict[str, int]:
        counts = self.topology.map_counts()
        counts.update({n: len(a) for n, a in self.alive.items()})
        return counts

    def step(self, k: int = 1) -> tuple[list[Selected], float]:
        provider = ReferenceProvider(self.topology, self.calibration)
        raw = {}
        for name in self.scope:
            ctx = layer_context(self.topology.stage(name), provider, self.generator)
            raw[name] = self.criterion.score_layer(ctx).detach().flatten()[self.alive[name]]
        costs = {n: mflops(m) for n, m in self.topology.macs_per_map(self.counts()).items()}
        final = flops_regularize(normalize(raw, self.normalization), costs, self.flops_lambda)
        chosen = select_minimum(final, self.alive, k)
        for sel in chosen:
            self.remove_original(sel.layer, sel.original)
        return chosen, self.accuracy()

    def remove_original(self, layer: str, original: int) -> None:
        """Mask map ``original`` (unpruned numbering) of ``layer``, e.g. to replay another run."""
        self._mask(layer, original)
        self.alive[layer].remove(original)

    @torch.no_grad()
    def _mask(self, layer: str, original: int) -> None:
        info = self.topology.prunable(layer)
        producer, consumer = self.topology.stages[info.index], self.topology.stages[info.index + 1]
        producer.module.weight[original] = 0
        if producer.module.bias is not None:
            producer.module.bias[original] = 0
        f = info.flatten_factor
        consumer.module.weight[:, original * f:(original + 1) * f] = 0

    def accuracy(self) -> float:
        return accuracy(predict(self.topology.forward, self.eval_split.images), self.eval_split.labels)
