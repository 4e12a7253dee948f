"""Accuracy of a traced model after a removal, recomputing only the layers the removal changed.

The traced graph is cut where a single value carries everything later nodes need (a *cut*: no
value computed before it is used after it) — in a ResNet, the input of every residual block. The
evaluation split's values at the cuts that feed a layer are kept; after a removal the forward
restarts from the last kept cut before the removed group's first layer. Same ops on the same
values as a full forward, so the accuracy is the same; memory is the kept cuts (a ResNet-20 on
1,000 images of 3x32x32: about 0.4 GB).
"""

from __future__ import annotations

import torch
from torch import fx

from ..data import Split
from ..graph import Graph
from .general import EVAL_CHUNK, Recorder, logits_of, out_of_place

MEMORY_BUDGET = 1_000_000_000   # bytes of kept values; beyond it only the cuts nearest the output are kept


class IncrementalEvaluator:
    """Per-chunk values at the kept cuts of ``graph`` for ``split``, and the correct counts."""

    def __init__(self, graph: Graph, split: Split, chunk: int = EVAL_CHUNK) -> None:
        self.graph, self.split, self.chunk = graph, split, chunk
        self.nodes = list(graph.graph_module.graph.nodes)
        self.position = {n: i for i, n in enumerate(self.nodes)}
        self.cuts = self._kept_cuts()
        self.values: list[dict[fx.Node, torch.Tensor]] = []
        self.correct: list[int] = []
        self.dirty_from: int | None = 0          # position of the first changed node; None: clean

    def _kept_cuts(self) -> list[fx.Node]:
        """Cuts that feed a layer, as many as fit the memory budget (those nearest the output
        first: they are the cheapest to keep)."""
        layer_nodes = {n for r in self._records() for n in r.nodes}
        reach, cuts = -1, []
        for i, node in enumerate(self.nodes):
            if reach <= i and node.op in ("call_module", "call_function", "call_method") \
                    and any(u in layer_nodes for u in node.users) and _numel(node) is not None:
                cuts.append(node)
            reach = max([reach, i] + [self.position[u] for u in node.users])
        kept, used = [], 0
        for node in reversed(cuts):
            used += _numel(node) * 4 * len(self.split)
            if used > MEMORY_BUDGET:
                break
            kept.append(node)
        return kept[::-1]

    def _records(self):
        return [r for g in self.graph.groups for r in g.records]

    def changed(self, group: str) -> None:
        """Layers of ``group`` were cut: everything from its first layer on must be recomputed."""
        first = min((self.position[n] for r in self.graph.group(group).records for n in r.nodes),
                    default=0)
        self.dirty_from = first if self.dirty_from is None else min(self.dirty_from, first)

    @torch.no_grad()
    def accuracy(self) -> float:
        if self.dirty_from is not None:
            self._update(self.dirty_from)
            self.dirty_from = None
        return sum(self.correct) / max(1, len(self.split))

    def _update(self, first: int) -> None:
        start_cut = max((c for c in self.cuts if self.position[c] < first and self.values),
                        key=lambda c: self.position[c], default=None)
        model = self.graph.model
        was_training = model.training
        model.eval()
        try:
            with out_of_place(model):
                for k, s in enumerate(range(0, len(self.split), self.chunk)):
                    x = self.split.images[s:s + self.chunk]
                    env = {}
                    if start_cut is not None:       # nodes before the cut are never read again
                        stop = self.position[start_cut]
                        env = {n: None for n in self.nodes[:stop]}
                        env[start_cut] = self.values[k][start_cut]
                    recorder = Recorder(self.graph.graph_module, set(self.cuts))
                    logits = logits_of(recorder.run(x, initial_env=env))
                    correct = int((logits.argmax(1) == self.split.labels[s:s + self.chunk]).sum())
                    if k < len(self.values):
                        self.values[k].update(recorder.values)
                        self.correct[k] = correct
                    else:
                        self.values.append(recorder.values)
                        self.correct.append(correct)
        finally:
            model.train(was_training)


def _numel(node: fx.Node) -> int | None:
    """Elements per example of a node's tensor output (from the trace's shape propagation)."""
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    n = 1
    for d in tuple(meta.shape)[1:]:
        n *= int(d)
    return n
