"""The few places sparsify meets the rest of fmprune: building a model (and its dependency
graph) from a checkpoint, and saving the result as a checkpoint of the same model spec."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..graph import Graph
from ..run.checkpoint import Checkpoint, make_checkpoint, save_checkpoint


def build_traced(ckpt: Checkpoint) -> tuple[nn.Module, Graph]:
    """The checkpoint's model and its graph (groups named by producer, unit pruning's layers)."""
    return ckpt.build_traced()


def save_model(model: nn.Module, base: Checkpoint, graph: Graph, path: Path, **extra) -> Path:
    """Save ``model`` (a plain module: masks removed) as a checkpoint derived from ``base``;
    ``graph`` records the units removed, so the smaller model is rebuilt from the same spec."""
    ckpt = make_checkpoint(model.to("cpu"), base.spec, graph, data_fingerprint=base.data_fingerprint,
                           recipe=base.recipe, **extra)
    return save_checkpoint(ckpt, path)
