"""The general path: scoring dependency groups of any traced model with plain autograd.

Feature maps are read where each producer's map is complete (after its BatchNorm and activation,
``LayerRecord.feature_node``) by replaying the traced graph on the calibration batches
(:mod:`.replay`); one backward of the summed cross-entropy gives dC/da at every feature map at
once. Across removals only what a removal can change is recomputed (``Criterion.reads`` says
what): weight criteria rescore the groups whose layers were cut; activation criteria rescore the
groups whose feature maps lie downstream of the cut layers, replaying the calibration split from
the values kept at the graph's cuts (:mod:`.cuts`); gradient criteria need a fresh pass (a removal
changes the gradient everywhere upstream of it). Evaluation replays the evaluation split from the
kept cuts too (:mod:`.evaluation`). Every score and accuracy equals a rebuilt engine's bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ...criteria import Criterion, Scores
from ...data import Split
from ...graph import Graph, Member
from ...modes import logits_of
from ..engine_base import EngineBase, channels_first, grad_dot
from .cuts import CutCache
from .evaluation import IncrementalEvaluator
from .probes import CalibrationProbes
from .replay import Recorder, downstream, replaying

CHUNK = 250   # calibration examples per forward/backward: bounds the memory of the autograd graph


class AutogradProvider:
    """Feature maps and Σ dC/da · a of the graph's members on a calibration split, computed once
    per scoring round for every member asked for. With ``cuts`` (the calibration split's values
    kept at the graph's cuts), feature maps alone are replayed from the last cut before them."""

    def __init__(self, graph: Graph, split: Split, members: dict[str, Member], cuts: CutCache | None = None) -> None:
        self.graph, self.split, self.members, self.cuts = graph, split, members, cuts
        self._acts: dict[str, torch.Tensor] | None = None
        self._gda: dict[str, torch.Tensor] | None = None
        self._probes: CalibrationProbes | None = None

    def _run(self, gradients: bool) -> None:
        if self.cuts is not None and not gradients:
            self._acts = self._replayed_activations()
            return
        nodes = {m.feature_node: name for name, m in self.members.items()}
        acts: dict[str, list[torch.Tensor]] = {n: [] for n in self.members}
        gdas: dict[str, list[torch.Tensor]] = {n: [] for n in self.members}
        with replaying(self.graph.model), torch.enable_grad() if gradients else torch.no_grad():
            for start in range(0, len(self.split), CHUNK):
                x = self.split.images[start:start + CHUNK]
                y = self.split.labels[start:start + CHUNK]
                recorder = Recorder(self.graph.graph_module, set(nodes))
                logits = logits_of(recorder.run(x))
                values = [recorder.values[node] for node in nodes]
                for node, v in zip(nodes, values):
                    name = nodes[node]
                    acts[name].append(channels_first(v.detach(), self.members[name].axis))
                if gradients:
                    loss = F.cross_entropy(logits, y, reduction="sum")
                    grads = torch.autograd.grad(loss, values, allow_unused=True)
                    for node, v, g in zip(nodes, values, grads):
                        name = nodes[node]
                        g = torch.zeros_like(v) if g is None else g.detach()
                        gdas[name].append(grad_dot(g, v.detach(), self.members[name].axis))
        self._acts = {n: torch.cat(v) for n, v in acts.items()}
        if gradients:
            self._gda = {n: torch.cat(v) for n, v in gdas.items()}

    def _replayed_activations(self) -> dict[str, torch.Tensor]:
        acts: dict[str, list[torch.Tensor]] = {n: [] for n in self.members}
        for _, _, values in self.cuts.replay({m.feature_node for m in self.members.values()}):
            for name, m in self.members.items():
                acts[name].append(channels_first(values[m.feature_node], m.axis))
        return {n: torch.cat(v) for n, v in acts.items()}

    def activation(self, layer: str) -> torch.Tensor:
        if self._acts is None:
            self._run(gradients=False)
        return self._acts[layer]

    def grad_dot_activation(self, layer: str) -> torch.Tensor:
        if self._gda is None:
            self._run(gradients=True)
        return self._gda[layer]

    def probe(self, layer: str, quantity: str, **options):
        """The quantities of the oracle, weight-gradient, BatchNorm-Taylor and OBD criteria
        (see :mod:`.probes`), computed once per scoring round."""
        if self._probes is None:
            self._probes = CalibrationProbes(self.graph, self.split, self.members)
        return self._probes.get(layer, quantity, **options)


class GraphEngine(EngineBase):
    """Scores groups of any traced model, selects, removes through the graph, evaluates; after a
    removal it rescores only the groups whose scores the removal can change and recomputes only
    the layers from the removed group on."""

    def __init__(self, graph: Graph, criterion: Criterion, eval_split: Split, calibration: Split,
                 scope: list[str], normalization: str = "none", flops_lambda: float = 0.0,
                 seed: int = 0, reduction: str = "sum") -> None:
        super().__init__(graph, criterion, scope, normalization, flops_lambda, seed)
        self.eval_split, self.calibration, self.reduction = eval_split, calibration, reduction
        self._accuracy: float | None = None
        self._evaluator: IncrementalEvaluator | None = None     # built at the first accuracy()
        self._calibration_cuts: CutCache | None = None          # built at the first activation scoring

    def raw_scores(self) -> Scores:
        stale = [n for n in self.scope if self.raw[n] is None]
        if stale:
            members = {m.name: m for name in stale for m in self.graph.members(name)}
            provider = AutogradProvider(self.graph, self.calibration, members, self._activation_cuts())
            self.score_groups(stale, provider, self.reduction)
        return {n: self.raw[n] for n in self.scope}

    def _activation_cuts(self) -> CutCache | None:
        """The calibration split's values at the cuts, kept across removals, for a criterion that
        reads feature maps but no gradients (gradients need a fresh backward every round)."""
        reads = self.criterion.reads
        if "activations" not in reads or "gradients" in reads:
            return None
        if self._calibration_cuts is None:
            self._calibration_cuts = CutCache(self.graph, self.calibration, CHUNK)
        return self._calibration_cuts

    def invalidate_all(self) -> None:
        super().invalidate_all()
        self._accuracy = None
        self._evaluator = None
        self._calibration_cuts = None

    def remove(self, group: str, maps: Sequence[int], optimizer: torch.optim.Optimizer | None = None) -> None:
        records = self.graph.group(group).records
        touched = {r.name for r in records}
        cut_nodes = {n for r in records for n in r.nodes}
        affected = cut_nodes | downstream(cut_nodes)    # the nodes whose values the removal changes
        keep = self.graph.remove(group, maps, optimizer)
        for cuts in (self._evaluator, self._calibration_cuts):
            if cuts is not None:
                cuts.changed(group)
        if self.raw.get(group) is not None:
            self.raw[group] = self.raw[group][keep]
        for name in self.scope:
            if name != group and self._changed(name, touched, affected):
                self.raw[name] = None
        if "gradients" in self.criterion.reads or "activations" in self.criterion.reads:
            self.raw[group] = None
        self._accuracy = None

    def _changed(self, name: str, touched: set[str], affected: set) -> bool:
        """Whether group ``name``'s scores can change when layers ``touched`` were cut and the
        values of nodes ``affected`` changed: a gradient reaches every layer upstream of a cut
        one, a feature map changes only downstream of one, a weight only in a cut layer."""
        reads = self.criterion.reads
        if "gradients" in reads:
            return True
        if "activations" in reads and any(m.feature_node in affected for m in self.graph.members(name)):
            return True
        if "weights" in reads:
            return any(m.name in touched for m in self.graph.members(name, feature_maps=False))
        return False

    @torch.no_grad()
    def accuracy(self) -> float:
        """Accuracy on the evaluation split; after a removal only the layers from the removed
        group on are recomputed (``evaluation.IncrementalEvaluator``)."""
        if self._accuracy is None:
            if self._evaluator is None:
                self._evaluator = IncrementalEvaluator(self.graph, self.eval_split)
            self._accuracy = self._evaluator.accuracy()
        return self._accuracy
