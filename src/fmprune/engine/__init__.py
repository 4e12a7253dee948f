"""Computing what criteria read and keeping it exact across removals: the general autograd path
for any traced graph, the fast path for chains (chosen automatically), the naive reference."""

from __future__ import annotations

from ..criteria import READS_ALL, Criterion
from ..data import Split
from ..errors import TopologyError
from ..graph import Graph
from ..graph.chain import trace as trace_chain
from .engine_base import EngineBase
from .fast.chain_engine import ChainEngine
from .general.graph_engine import GraphEngine
from .selection import Selected, select_minimum

Engine = EngineBase   # ChainEngine or GraphEngine


def create_engine(graph: Graph, criterion: Criterion, eval_split: Split, calibration: Split,
                  scope: list[str], normalization: str = "none", flops_lambda: float = 0.0,
                  seed: int = 0, reduction: str = "sum", fast: bool = True, per_cost: str = "none") -> Engine:
    """The chain fast path when the model is a plain chain of conv/linear stages (same decisions,
    much faster), else the general path. ``fast=False`` forces the general path, and so does a
    criterion that reads more than weights, activations and Taylor products (the oracle, parameter
    gradients, Hessians: ``engine/general/probes.py`` computes them on the general path)."""
    topology = None
    if fast and criterion.reads <= READS_ALL and graph.is_chain():
        try:
            topology = trace_chain(graph.model, tuple(graph.example_inputs[0].shape[1:]))
        except TopologyError:
            topology = None
    if topology is not None and topology.prunable_names == graph.names:
        engine: Engine = ChainEngine(graph, topology, criterion, eval_split, calibration, scope,
                                     normalization, flops_lambda, seed)
    else:
        engine = GraphEngine(graph, criterion, eval_split, calibration, scope, normalization,
                             flops_lambda, seed, reduction)
    engine.per_cost = per_cost
    return engine


__all__ = ["EngineBase", "ChainEngine", "GraphEngine", "Engine", "create_engine", "Selected", "select_minimum"]
