"""Accuracy of a traced model on a split held in memory: a plain forward of the model
(:func:`evaluate_model`), or, across removals, recomputing only the layers a removal changed
(:class:`IncrementalEvaluator`, on the values kept at the graph's cuts by :mod:`.cuts`)."""

from __future__ import annotations

import torch
from torch import nn

from ...data import Split
from ...graph import Graph
from ...modes import eval_mode
from .cuts import CutCache
from .replay import logits_of

EVAL_CHUNK = 1000


class IncrementalEvaluator:
    """Per-chunk correct counts of ``graph``'s model on ``split``, recomputed from the last kept
    cut before the first layer a removal changed."""

    def __init__(self, graph: Graph, split: Split, chunk: int = EVAL_CHUNK) -> None:
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


@torch.no_grad()
def evaluate_model(model: nn.Module, split: Split, chunk: int = EVAL_CHUNK) -> float:
    """Accuracy of ``model`` in eval mode on a split held in memory (modes restored)."""
    correct = 0
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(split), chunk):
            logits = logits_of(model(split.images[start:start + chunk]))
            correct += int((logits.argmax(1) == split.labels[start:start + chunk]).sum())
    return correct / max(1, len(split))
