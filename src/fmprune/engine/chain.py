"""The chain fast path: score → select → remove → evaluate for plain chains of conv/linear
stages (LeNet), without recomputing what a removal did not change. Chosen automatically when the
graph is a chain; its decisions equal the general path's and the naive loop's.

* Activations of the evaluation and calibration sets are cached at every stage boundary. Removing
  maps of stage *l* changes nothing before its consumer; the consumer's pre-activation changes by
  exactly the removed maps' contribution (subtracted), and only the stages after it are recomputed.
* Gradients for gradient-based criteria come from a hand-written backward over the cached
  activations (no autograd graph of the whole model), down to the earliest layer being scored.
* Criterion scores are cached per layer and recomputed only where ``Criterion.reads`` says a
  removal can change them.
Every decision and number equals the naive loop's (``fmprune.reference``) up to float rounding.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..criteria import Criterion, LayerContext, Scores, flops_regularize, mflops, normalize
from ..data import Split
from ..graph import Graph
from ..graph.chain import Stage, Topology
from ..surgery import take
from .select import Selected, select_minimum
from .winners import WinnerContributions, winner_pool

CHUNK = 1000  # examples per forward chunk, bounds peak memory of the full-size passes


def consumer_columns(keep: torch.Tensor, factor: int) -> torch.Tensor:
    """Input columns of the consumer that belong to the kept maps (channel-major flatten)."""
    return (keep[:, None] * factor + torch.arange(factor)[None, :]).flatten()


def layer_context(stage: Stage, provider, generator: torch.Generator) -> LayerContext:
    """A criterion's view of one chain stage."""
    return LayerContext(stage.name, stage.module, stage.n_maps, stage.map_numel,
                        lambda: stage.module.weight.detach(), provider, generator)


def stage_outputs(stage: Stage, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = stage.layer(x)
    return z, stage.reduce_maps(stage.activate(z))


def input_contribution(consumer: Stage, x_maps: torch.Tensor, weight_slice: torch.Tensor) -> torch.Tensor:
    """What some input maps add to the consumer's pre-activation (bias excluded)."""
    m = consumer.module
    if isinstance(m, nn.Conv2d):
        return F.conv2d(x_maps, weight_slice, None, m.stride, m.padding, m.dilation)
    return x_maps.flatten(1) @ weight_slice.t()


def input_grad(stage: Stage, grad_z: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    """dC/d(input) of the stage's layer given dC/dz."""
    m = stage.module
    if isinstance(m, nn.Conv2d):
        out = F.conv_transpose2d(grad_z, m.weight.detach(), None, m.stride, m.padding, 0, 1, m.dilation)
        if out.shape[2:] != input_shape[2:]:  # strided convs can leave a border the input had
            out = torch.nn.grad.conv2d_input(input_shape, m.weight.detach(), grad_z, m.stride,
                                              m.padding, m.dilation, m.groups)
        return out
    return (grad_z @ m.weight.detach()).view(input_shape)


class ActivationCache:
    """Pre-activations ``z`` and consumer inputs ``p`` of every stage for a fixed set of inputs.

    The first stage's ``z`` is the largest tensor and is read only by criteria (activations);
    an evaluation cache passes ``first_z=False`` and never stores it."""

    def __init__(self, topology: Topology, split: Split, first_z: bool = True) -> None:
        self.topology, self.split, self.first_z = topology, split, first_z
        self.z: list[torch.Tensor | None] = []
        self.p: list[torch.Tensor] = []
        self._vjp_graphs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._winners: dict[int, WinnerContributions] = {}
        self._rounds_since_rebuild = 0
        self.rebuild()

    @torch.no_grad()
    def rebuild(self) -> None:
        """Full forward (after weights changed, e.g. by retraining)."""
        zs: list[list[torch.Tensor]] = [[] for _ in self.topology.stages]
        ps: list[list[torch.Tensor]] = [[] for _ in self.topology.stages]
        for start in range(0, len(self.split), CHUNK):
            x = self.split.images[start:start + CHUNK]
            for i, s in enumerate(self.topology.stages):
                z, x = stage_outputs(s, x)
                if i > 0 or self.first_z:
                    zs[i].append(z)
                ps[i].append(x)
        self.z = [torch.cat(c) if c else None for c in zs]
        self.p = [torch.cat(c) for c in ps]
        self._vjp_graphs.clear()
        self._winners.clear()
        self._rounds_since_rebuild = 0

    @property
    def logits(self) -> torch.Tensor:
        return self.p[-1]

    def accuracy(self) -> float:
        return float((self.logits.argmax(1) == self.split.labels).float().mean())

    def contribution(self, index: int, drop: torch.Tensor, consumer_weight: torch.Tensor,
                     flatten_factor: int) -> torch.Tensor:
        """The dropped maps' share of the consumer's pre-activation, with the weights before surgery."""
        consumer = self.topology.stages[index + 1]
        cols = consumer_columns(drop, flatten_factor)
        return input_contribution(consumer, take(self.p[index], 1, drop), take(consumer_weight, 1, cols))

    @torch.no_grad()
    def apply_removal(self, index: int, keep: torch.Tensor, contribution: torch.Tensor) -> None:
        """Update the cache after surgery removed maps of stage ``index`` (keeping ``keep``)."""
        stages = self.topology.stages
        if self.z[index] is not None:
            self.z[index] = take(self.z[index], 1, keep)
        self.p[index] = take(self.p[index], 1, keep)
        self._vjp_graphs = {i: g for i, g in self._vjp_graphs.items() if i < index}
        c = index + 1
        self.z[c].sub_(contribution)  # no one else holds z[c]: stale graphs were dropped above
        self.p[c] = stages[c].reduce_maps(stages[c].activate(self.z[c]))
        self._update_winners(index, keep)
        for j in range(c + 1, len(stages)):
            self.z[j], self.p[j] = stage_outputs(stages[j], self.p[j - 1])

    def grad_dot_activations(self, first: int) -> dict[int, torch.Tensor]:
        """For every stage from ``first`` to the last prunable one: per example and map,
        Σ dC/dp · p over the map, C the per-example cross-entropy.

        This equals Σ dC/da · a over the feature map a (Taylor's product) because the ops between
        a and p (max/avg pooling, dropout in eval) act per channel and are positively homogeneous.
        """
        stages = self.topology.stages
        last = len(stages) - 1
        self._rounds_since_rebuild += 1
        g = torch.softmax(self.z[last], 1)
        g[torch.arange(len(g), device=g.device), self.split.labels] -= 1.0
        grad_p = g
        out: dict[int, torch.Tensor] = {}
        for i in range(last, first, -1):
            if i < last:
                winners = self._winner_contributions(i) if i - 1 == first else None
                if winners is not None:
                    out[i - 1] = winners.grad_dot_input(grad_p, self.p[i])
                    break
                g = self._grad_through_activation(i, grad_p)
            x = self.p[i - 1]
            grad_p = input_grad(stages[i], g, x.shape)
            out[i - 1] = (grad_p * x).flatten(2).sum(2) if x.dim() > 2 else grad_p * x
        return out

    def _winner_contributions(self, consumer: int) -> WinnerContributions | None:
        """The fast path for the producer of ``consumer``, built from the second scoring round
        after a rebuild on (a retraining run rebuilds every step and keeps the dense backward)."""
        if consumer in self._winners:
            return self._winners[consumer]
        stage = self.topology.stages[consumer]
        pool = winner_pool(stage)
        if (pool is None or self._rounds_since_rebuild < 2
                or not WinnerContributions.fits(stage, self.p[consumer - 1])):
            return None
        self._winners[consumer] = WinnerContributions(stage, pool, self.p[consumer - 1], self.z[consumer])
        return self._winners[consumer]

    def _update_winners(self, index: int, keep: torch.Tensor) -> None:
        """Keep the fast-path tensors exact after maps of stage ``index`` were removed."""
        for consumer, w in list(self._winners.items()):
            if index == consumer:
                w.output_maps_removed(keep)
            elif index == consumer - 1:
                w.input_maps_removed(keep, self.z[consumer])
            elif index < consumer - 1:
                del self._winners[consumer]

    def _grad_through_activation(self, index: int, grad_p: torch.Tensor) -> torch.Tensor:
        """dC/dz of stage ``index`` from dC/dp: a vector-Jacobian product through its ReLU/pool.
        The small autograd graph is kept until ``z`` changes, so repeated steps skip its forward."""
        if index not in self._vjp_graphs:
            s = self.topology.stages[index]
            with torch.enable_grad():
                z = self.z[index].detach().requires_grad_(True)
                self._vjp_graphs[index] = (s.reduce_maps(s.activate(z)), z)
        out, z = self._vjp_graphs[index]
        with torch.enable_grad():
            (gz,) = torch.autograd.grad(out, z, grad_p, retain_graph=True)
        return gz


class CachedProvider:
    """Calibration quantities for criteria, from an :class:`ActivationCache`, computed lazily and
    at most once per scoring round."""

    def __init__(self, cache: ActivationCache, first_needed: int) -> None:
        self.cache, self.first_needed = cache, first_needed
        self._gda: dict[int, torch.Tensor] | None = None

    def activation(self, layer: str) -> torch.Tensor:
        i = self.cache.topology.index(layer)
        return self.cache.topology.stages[i].activate(self.cache.z[i])

    def grad_dot_activation(self, layer: str) -> torch.Tensor:
        if self._gda is None:
            with torch.no_grad():
                self._gda = self.cache.grad_dot_activations(self.first_needed)
        return self._gda[self.cache.topology.index(layer)]


class ChainEngine:
    """Scores, selects and physically removes maps of a chain model, keeping caches exact.
    Surgery goes through the graph; the caches follow it."""

    def __init__(self, graph: Graph, topology: Topology, criterion: Criterion, eval_split: Split,
                 calibration: Split, scope: list[str], normalization: str = "none",
                 flops_lambda: float = 0.0, seed: int = 0) -> None:
        self.graph, self.topology, self.criterion, self.scope = graph, topology, criterion, scope
        self.normalization, self.flops_lambda = normalization, flops_lambda
        self.generator = torch.Generator().manual_seed(seed)
        self.eval_cache = ActivationCache(topology, eval_split, first_z=False)
        self.calib_cache = ActivationCache(topology, calibration)
        self.raw: dict[str, torch.Tensor | None] = {name: None for name in scope}

    # -- scoring
    def raw_scores(self) -> Scores:
        """Criterion scores of every scope layer, recomputing only invalidated layers."""
        stale = [n for n in self.scope if self.raw[n] is None]
        if stale:
            provider = CachedProvider(self.calib_cache, min(self.topology.index(n) for n in stale))
            for name in stale:
                ctx = layer_context(self.topology.stage(name), provider, self.generator)
                with torch.no_grad():
                    self.raw[name] = self.criterion.score_layer(ctx).detach().flatten().cpu().clone()
        return {n: self.raw[n] for n in self.scope}

    def final_scores(self) -> Scores:
        """Raw scores after per-layer normalisation and FLOPs regularisation."""
        scores = normalize(self.raw_scores(), self.normalization)
        costs = {n: mflops(m) for n, m in self.graph.macs_per_map().items()}
        return flops_regularize(scores, costs, self.flops_lambda)

    def select(self, k: int = 1) -> list[Selected]:
        return select_minimum(self.final_scores(), self.alive, k)

    @property
    def alive(self) -> dict[str, list[int]]:
        return {n: self.graph.alive(n) for n in self.graph.names}

    def invalidate_all(self) -> None:
        """Forget every score and cache (the weights changed, e.g. by retraining)."""
        self.raw = {name: None for name in self.scope}
        self.eval_cache.rebuild()
        self.calib_cache.rebuild()

    # -- removal
    def remove(self, layer: str, maps: Sequence[int],
               optimizer: torch.optim.Optimizer | None = None) -> None:
        """Physically remove ``maps`` (current indices) of ``layer`` and update every cache."""
        info = self.topology.prunable(layer)
        drop = torch.tensor(sorted(maps), dtype=torch.long)
        consumer_weight = self.topology.stages[info.index + 1].module.weight.detach()
        caches = (self.eval_cache, self.calib_cache)
        contributions = [c.contribution(info.index, drop, consumer_weight, info.flatten_factor) for c in caches]
        keep = self.graph.remove(layer, drop.tolist(), optimizer)
        for cache, contribution in zip(caches, contributions):
            cache.apply_removal(info.index, keep, contribution)
        if self.raw.get(layer) is not None:
            self.raw[layer] = self.raw[layer][keep]
        for j in self.criterion.invalidated_by(info.index, len(self.topology.stages)):
            name = self.topology.stages[j].name
            if name in self.raw:
                self.raw[name] = None

    def remove_selected(self, chosen: list[Selected],
                        optimizer: torch.optim.Optimizer | None = None) -> None:
        """Remove a selection, grouped per layer (one surgery per layer)."""
        for layer in dict.fromkeys(s.layer for s in chosen):
            self.remove(layer, [s.index for s in chosen if s.layer == layer], optimizer)

    def accuracy(self) -> float:
        return self.eval_cache.accuracy()
