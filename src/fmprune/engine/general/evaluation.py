"""Accuracy of a traced model across removals, recomputing only the layers a removal changed
(:class:`IncrementalEvaluator`, on the values kept at the graph's cuts by :mod:`.cuts`); it
counts as :func:`fmprune.training.evaluate`, the plain forward, does, chunk for chunk."""

from __future__ import annotations

from ...data import Split
from ...graph import Graph
from ...modes import logits_of
from ...training import EVAL_BATCH
from .cuts import CutCache


class IncrementalEvaluator:
    """Per-chunk correct counts of ``graph``'s model on ``split``, recomputed from the last kept
    cut before the first layer a removal changed."""

    def __init__(self, graph: Graph, split: Split, chunk: int = EVAL_BATCH) -> None:
        self.split = split
        self.cache = CutCache(graph, split, chunk)
        self.correct: list[int] = []

    def changed(self, group: str) -> None:
        """Layers of ``group`` were cut: everything from its first layer on must be recomputed."""
        self.cache.changed(group)

    def accuracy(self) -> float:
        chunk = self.cache.chunk
        for k, output, _ in self.cache.replay():
            labels = self.split.labels[k * chunk:(k + 1) * chunk]
            correct = int((logits_of(output).argmax(1) == labels).sum())
            if k < len(self.correct):
                self.correct[k] = correct
            else:
                self.correct.append(correct)
        return sum(self.correct) / max(1, len(self.split))
