"""How small a scope can make a model: the floor below which a size target cannot be met."""

from __future__ import annotations

import copy

from ..graph import Graph, trace


def smallest_size(graph: Graph, scope: list[str]) -> tuple[int, int]:
    """(params, MACs) with every group of ``scope`` down to one map, measured on a copy (the
    model itself is untouched)."""
    model = copy.deepcopy(graph.model)
    device = next(iter(model.parameters()), graph.example_inputs[0]).device
    copy_graph = trace(model, tuple(t.to(device) for t in graph.example_inputs), ignore=graph.ignore)
    for name in scope:
        if copy_graph.group(name).size > 1:
            copy_graph.remove(name, list(range(1, copy_graph.group(name).size)))
    return copy_graph.total_params(), copy_graph.total_macs()
