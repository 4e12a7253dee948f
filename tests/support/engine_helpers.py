"""Test helpers around the chain fast path: an engine on a chain topology, and removal by layer."""

from __future__ import annotations

import torch

import fmprune
from fmprune.engine.fast.chain_engine import ChainEngine
from fmprune.graph.chain import Topology


def input_shape(topo: Topology) -> tuple[int, ...]:
    first = topo.stages[0]
    return (first.module.in_channels, *first.in_spatial)


def graph_of(topo: Topology) -> fmprune.Graph:
    return fmprune.trace(topo.model, torch.zeros(1, *input_shape(topo)))


def chain_engine(topo: Topology, criterion, eval_split, calibration, scope, normalization="none",
                 flops_lambda=0.0, seed=0) -> ChainEngine:
    return ChainEngine(graph_of(topo), topo, criterion, eval_split, calibration, scope, normalization,
                       flops_lambda, seed)


def remove_maps(topo: Topology, layer: str, maps, optimizer=None) -> torch.Tensor:
    """Remove maps of a chain layer through the graph (current numbering); returns kept indices."""
    return graph_of(topo).remove(layer, list(maps), optimizer)
