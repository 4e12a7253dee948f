"""The general path: scoring dependency groups of any traced model with plain autograd.

Feature maps are read where each producer's map is complete (after its BatchNorm and activation,
``LayerRecord.feature_node``) by replaying the traced graph on the calibration batches with an
interpreter that keeps those values and disables in-place ops (so autograd can differentiate
through them); one backward of the summed cross-entropy gives dC/da at every feature map at once.
Evaluation is a plain eval-mode forward of the (physically shrunk) model.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..criteria import Criterion, Scores
from ..data import Split
from ..graph import Graph, Member
from ..graph.ops import INPLACE_FUNCTIONS
from .base import EngineBase, channels_first, grad_dot

CHUNK = 250   # calibration examples per forward/backward: bounds the memory of the autograd graph
EVAL_CHUNK = 1000


class Recorder(fx.Interpreter):
    """Runs the traced graph, keeping the values of ``wanted`` nodes; in-place ops run out of place."""

    def __init__(self, gm: fx.GraphModule, wanted: set[fx.Node]) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.wanted, self.values = wanted, {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n in self.wanted:
            self.values[n] = out
        return out

    def call_function(self, target, args, kwargs):
        target = INPLACE_FUNCTIONS.get(target, target)
        if kwargs.get("inplace"):
            kwargs = {**kwargs, "inplace": False}
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target.endswith("_") and not target.startswith("_"):
            target = target[:-1]   # relu_ -> relu
        return super().call_method(target, args, kwargs)


@contextmanager
def out_of_place(model: nn.Module) -> Iterator[None]:
    """Modules such as ReLU(inplace=True) would overwrite values autograd needs."""
    flagged = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in flagged:
        m.inplace = False
    try:
        yield
    finally:
        for m in flagged:
            m.inplace = True


def logits_of(output) -> torch.Tensor:
    """The classification output of a model that may return several values (the first tensor)."""
    if torch.is_tensor(output):
        return output
    flat = [o for o in (output.values() if isinstance(output, dict) else output) if torch.is_tensor(o)]
    return flat[0]


class AutogradProvider:
    """Feature maps and Σ dC/da · a of the graph's members on a calibration split, computed once
    per scoring round for every member asked for."""

    def __init__(self, graph: Graph, split: Split, members: dict[str, Member]) -> None:
        self.graph, self.split, self.members = graph, split, members
        self._acts: dict[str, torch.Tensor] | None = None
        self._gda: dict[str, torch.Tensor] | None = None
        self._probes = None

    def _run(self, gradients: bool) -> None:
        nodes = {m.feature_node: name for name, m in self.members.items()}
        acts: dict[str, list[torch.Tensor]] = {n: [] for n in self.members}
        gdas: dict[str, list[torch.Tensor]] = {n: [] for n in self.members}
        model = self.graph.model
        was_training = model.training
        model.eval()
        try:
            with out_of_place(model), torch.enable_grad() if gradients else torch.no_grad():
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
        finally:
            model.train(was_training)
        self._acts = {n: torch.cat(v) for n, v in acts.items()}
        if gradients:
            self._gda = {n: torch.cat(v) for n, v in gdas.items()}

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
            from .probes import CalibrationProbes   # probes builds on this module's recorder
            self._probes = CalibrationProbes(self.graph, self.split, self.members)
        return self._probes.get(layer, quantity, **options)


class GraphEngine(EngineBase):
    """Scores groups of any traced model, selects, removes through the graph, evaluates."""

    def __init__(self, graph: Graph, criterion: Criterion, eval_split: Split, calibration: Split,
                 scope: list[str], normalization: str = "none", flops_lambda: float = 0.0,
                 seed: int = 0, reduction: str = "sum") -> None:
        super().__init__(graph, criterion, scope, normalization, flops_lambda, seed)
        self.eval_split, self.calibration, self.reduction = eval_split, calibration, reduction
        self._accuracy: float | None = None
        self._evaluator = None      # IncrementalEvaluator, built at the first accuracy()

    def raw_scores(self) -> Scores:
        stale = [n for n in self.scope if self.raw[n] is None]
        if stale:
            members = {m.name: m for name in stale for m in self.graph.members(name)}
            self.score_groups(stale, AutogradProvider(self.graph, self.calibration, members), self.reduction)
        return {n: self.raw[n] for n in self.scope}

    def invalidate_all(self) -> None:
        super().invalidate_all()
        self._accuracy = None
        self._evaluator = None

    def remove(self, group: str, maps: Sequence[int], optimizer: torch.optim.Optimizer | None = None) -> None:
        touched = {r.name for r in self.graph.group(group).records}
        keep = self.graph.remove(group, maps, optimizer)
        if self._evaluator is not None:
            self._evaluator.changed(group)
        if self.raw.get(group) is not None:
            self.raw[group] = self.raw[group][keep]
        for name in self.scope:
            if name != group and self._changed(name, touched):
                self.raw[name] = None
        if "gradients" in self.criterion.reads or "activations" in self.criterion.reads:
            self.raw[group] = None
        self._accuracy = None

    def _changed(self, name: str, touched: set[str]) -> bool:
        """Whether group ``name``'s scores can change when layers ``touched`` were cut."""
        reads = self.criterion.reads
        if "gradients" in reads or "activations" in reads:
            return True
        if "weights" in reads:
            return any(m.name in touched for m in self.graph.members(name))
        return False

    @torch.no_grad()
    def accuracy(self) -> float:
        """Accuracy on the evaluation split; after a removal only the layers from the removed
        group on are recomputed (``evaluation.IncrementalEvaluator``)."""
        if self._accuracy is None:
            if self._evaluator is None:
                from .evaluation import IncrementalEvaluator   # it builds on this module
                self._evaluator = IncrementalEvaluator(self.graph, self.eval_split)
            self._accuracy = self._evaluator.accuracy()
        return self._accuracy


@torch.no_grad()
def evaluate_model(model: nn.Module, split: Split, chunk: int = EVAL_CHUNK) -> float:
    """Accuracy of ``model`` in eval mode on a split held in memory (train flag restored)."""
    was_training = model.training
    model.eval()
    try:
        correct = 0
        with torch.inference_mode():
            for start in range(0, len(split), chunk):
                logits = logits_of(model(split.images[start:start + chunk]))
                correct += int((logits.argmax(1) == split.labels[start:start + chunk]).sum())
    finally:
        model.train(was_training)
    return correct / max(1, len(split))
