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

from ...criteria import Criterion, LayerContext, Scores
from ...data import Split
from ...graph import Graph
from ...graph.chain import Stage, Topology
from ...surgery import take
from ...training import accuracy
from ..engine_base import EngineBase
from .head import HeadProjection, head_index
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


class Contribution:
    """What removed maps add to their consumer's pre-activation (bias excluded), computed block by
    block when applied, so a removal never holds an N-sized copy of the consumer's output."""

    def __init__(self, consumer: Stage, inputs: torch.Tensor, weight_slice: torch.Tensor) -> None:
        self.consumer, self.inputs, self.weight_slice = consumer, inputs, weight_slice

    def block(self, start: int, stop: int) -> torch.Tensor:
        return input_contribution(self.consumer, self.inputs[start:stop], self.weight_slice)


def stage_maps(stage: Stage, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """The consumer input of some maps of a stage without BatchNorm, from the stage's input."""
    m = stage.module
    x = x.flatten(1) if stage.flatten_input else x
    bias = m.bias.detach()[maps] if m.bias is not None else None
    if isinstance(m, nn.Conv2d):
        z = F.conv2d(x, m.weight.detach()[maps], bias, m.stride, m.padding, m.dilation)
    else:
        z = F.linear(x, m.weight.detach()[maps], bias)
    return stage.reduce_maps(stage.activate(z))


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

    The first stage's ``z`` is the largest tensor and is read only by criteria (activations): it
    is stored with ``first_z=True`` only, else recomputed when asked. ``paths`` says which fast
    paths gradients may take: "head" (``head``, then ``winners``), "winners", or "dense" (the
    plain backward, the reference the tests compare with). With ``lazy`` (an evaluation cache:
    only the logits are read) stages without BatchNorm keep removed channels in place instead of
    copying their N × C × ... tensors at every removal (``_cols[i]`` maps stage i's current
    numbering to buffer channels; None: they are the same), and the first stage's output is not
    stored (the maps a removal needs are recomputed from the inputs)."""

    def __init__(self, topology: Topology, split: Split, first_z: bool = False, lazy: bool = False,
                 paths: str = "head") -> None:
        self.topology, self.split, self._store_first_z = topology, split, first_z
        self._lazy_ok = [lazy and not s.norms for s in topology.stages[:-1]] + [False]
        self._first_p = not self._lazy_ok[0]
        self.z: list[torch.Tensor | None] = []
        self.p: list[torch.Tensor | None] = []
        self._cols: list[torch.Tensor | None] = [None] * len(topology.stages)
        self._vjp_graphs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._winners: dict[int, WinnerContributions] = {}
        self._head_index = head_index(topology) if paths == "head" else None
        self._use_winners = paths in ("head", "winners")
        self.head: HeadProjection | None = None
        self._rounds_since_rebuild = 0
        self._rebuilds = 0
        self.rebuild()

    @torch.no_grad()
    def rebuild(self) -> None:
        """Full forward (after weights changed, e.g. by retraining), into one buffer per tensor."""
        stages, n = self.topology.stages, len(self.split)
        self.z = [None] * len(stages)
        self.p = [None] * len(stages)
        for start in range(0, n, CHUNK):
            x = self.split.images[start:start + CHUNK]
            for i, s in enumerate(stages):
                z, x = stage_outputs(s, x)
                if i > 0 or self._store_first_z:
                    self.z[i] = _into(self.z[i], z, start, n)
                if x is z and self.z[i] is not None:
                    self.p[i] = self.z[i]          # no ops after the layer (the classifier)
                elif i > 0 or self._first_p:
                    self.p[i] = _into(self.p[i], x, start, n)
        self._cols = [None] * len(stages)
        self._vjp_graphs.clear()
        self._winners.clear()
        self.head = None
        self._rounds_since_rebuild = 0
        self._rebuilds += 1

    @property
    def logits(self) -> torch.Tensor:
        return self.p[-1]

    def accuracy(self) -> float:
        return accuracy(self.logits, self.split.labels)

    def first_pre_activation(self) -> torch.Tensor:
        """The first stage's pre-activation (stored or recomputed)."""
        z = self.z[0]
        return z if z is not None else self.topology.stages[0].layer(self.split.images)

    def _current_p(self, index: int) -> torch.Tensor:
        """Stage ``index``'s consumer input at the current width."""
        cols = self._cols[index]
        return self.p[index] if cols is None else self.p[index].index_select(1, cols)

    def _maps(self, index: int, maps: torch.Tensor) -> torch.Tensor:
        """Consumer inputs of ``maps`` (current numbering) of stage ``index``, weights before surgery."""
        if self.p[index] is None:       # the first stage of a lazy cache
            return stage_maps(self.topology.stages[0], self.split.images, maps)
        cols = self._cols[index]
        return self.p[index].index_select(1, cols[maps]) if cols is not None else take(self.p[index], 1, maps)

    def contribution(self, index: int, drop: torch.Tensor, consumer_weight: torch.Tensor,
                     flatten_factor: int) -> Contribution:
        """The dropped maps' share of the consumer's pre-activation, with the weights before surgery."""
        cols = consumer_columns(drop, flatten_factor)
        return Contribution(self.topology.stages[index + 1], self._maps(index, drop),
                            take(consumer_weight, 1, cols))

    @torch.no_grad()
    def apply_removal(self, index: int, keep: torch.Tensor, contribution: Contribution) -> None:
        """Update the cache after surgery removed maps of stage ``index`` (keeping ``keep``)."""
        stages = self.topology.stages
        if self.head is not None:
            self.head.before_removal(index, keep)
        if self._lazy_ok[index]:
            cols = self._cols[index]
            self._cols[index] = keep.clone() if cols is None else cols[keep]
        else:
            if self.z[index] is not None:
                self.z[index] = take(self.z[index], 1, keep)
            if self.p[index] is not None:
                self.p[index] = take(self.p[index], 1, keep)
        self._vjp_graphs = {i: g for i, g in self._vjp_graphs.items() if i < index}
        c = index + 1
        # no one else holds z[c] or p[c] (stale graphs were dropped above): update them in place,
        # block by block; a lazy z[c] keeps its dead channels, which are never read
        for start in range(0, len(self.split), CHUNK):
            stop = min(len(self.split), start + CHUNK)
            delta = contribution.block(start, stop)
            z = self.z[c][start:stop]
            if self._cols[c] is not None:
                z.index_add_(1, self._cols[c], delta, alpha=-1)
            else:
                z.sub_(delta)
            if self.p[c] is not self.z[c]:
                self.p[c][start:stop] = stages[c].reduce_maps(stages[c].activate(z))
        self._update_winners(index, keep)
        for j in range(c + 1, len(stages)):
            self.z[j], self.p[j] = stage_outputs(stages[j], self._current_p(j - 1))
            self._cols[j] = None        # recomputed at the current width
        if self.head is not None:
            self.head.after_removal(index, keep)

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
        head = self._head_projection(first)
        if head is not None:
            out = head.grad_dot(g)
            grad_p = input_grad(stages[last], g, self.p[last - 1].shape)
            out[last - 1] = grad_p * self.p[last - 1]
            return out
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

    def _worth_building(self) -> bool:
        """Whether a fast path's tensors (built once, then kept exact across removals) pay off:
        from the first round in a run whose weights never changed (no retraining: every later
        round reuses them), else from the second round after a rebuild (a run retraining every
        step rebuilds every step and keeps the dense backward)."""
        return self._rebuilds == 1 or self._rounds_since_rebuild >= 2

    def _head_projection(self, first: int) -> HeadProjection | None:
        """The projection through the linear head when it covers every stage from ``first`` on
        and some stage before the head is scored (the head's own units need no projection)."""
        h = self._head_index
        if h is None or first >= h:
            return None
        if self.head is None and self._worth_building():
            lowest = h - (2 if winner_pool(self.topology.stages[h - 1]) else 1)
            if first >= lowest:
                self.head = HeadProjection(self.topology, h, self)
        return self.head if self.head is not None and first >= self.head.lowest else None

    def _winner_contributions(self, consumer: int) -> WinnerContributions | None:
        """The fast path for the producer of ``consumer`` (see ``_worth_building``)."""
        if consumer in self._winners:
            return self._winners[consumer]
        stage = self.topology.stages[consumer]
        pool = winner_pool(stage)
        if (pool is None or not self._use_winners or not self._worth_building()
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


def _into(buffer: torch.Tensor | None, block: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """Copy ``block`` into rows start:start+len(block) of ``buffer`` (allocated at the first block)."""
    if buffer is None:
        buffer = torch.empty((n, *block.shape[1:]), dtype=block.dtype, device=block.device)
    buffer[start:start + len(block)] = block
    return buffer


class CachedProvider:
    """Calibration quantities for criteria, from an :class:`ActivationCache`, computed lazily and
    at most once per scoring round."""

    def __init__(self, cache: ActivationCache, first_needed: int) -> None:
        self.cache, self.first_needed = cache, first_needed
        self._gda: dict[int, torch.Tensor] | None = None

    def activation(self, layer: str) -> torch.Tensor:
        i = self.cache.topology.index(layer)
        z = self.cache.first_pre_activation() if i == 0 else self.cache.z[i]
        return self.cache.topology.stages[i].activate(z)

    def grad_dot_activation(self, layer: str) -> torch.Tensor:
        if self._gda is None:
            with torch.no_grad():
                self._gda = self.cache.grad_dot_activations(self.first_needed)
        return self._gda[self.cache.topology.index(layer)]


class ChainEngine(EngineBase):
    """Scores, selects and physically removes maps of a chain model, keeping caches exact.
    Surgery goes through the graph; the caches follow it."""

    def __init__(self, graph: Graph, topology: Topology, criterion: Criterion, eval_split: Split,
                 calibration: Split, scope: list[str], normalization: str = "none",
                 flops_lambda: float = 0.0, seed: int = 0) -> None:
        super().__init__(graph, criterion, scope, normalization, flops_lambda, seed)
        self.topology = topology
        self.eval_cache = ActivationCache(topology, eval_split, lazy=True)
        head = head_index(topology)
        # the head's tables pay off when its units are removed (most steps of a whole-network
        # run); when only earlier layers lose maps, the pooling-winner path is cheaper per step
        paths = "head" if head is not None and topology.stages[head].name in scope else "winners"
        self.calib_cache = ActivationCache(topology, calibration, paths=paths)

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

    def invalidate_all(self) -> None:
        super().invalidate_all()
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

    def accuracy(self) -> float:
        return self.eval_cache.accuracy()
