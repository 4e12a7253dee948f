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


def targets_met(graph: Graph, base: tuple[int, int], target_params: float | None,
                target_macs: float | None) -> bool:
    """Every size target given (fractions of ``base`` = (params, MACs)) is met; False with none
    given. Both together mean both: a model ×80 smaller must also be ×7 cheaper. Sizes are
    counted only for the targets given (this runs every step)."""
    met = []
    if target_params is not None:
        met.append(graph.total_params() <= target_params * base[0])
    if target_macs is not None:
        met.append(graph.total_macs() <= target_macs * base[1])
    return bool(met) and all(met)


def trim_to_target(graph: Graph, chosen: list, base: tuple[int, int], target_params: float | None,
                   target_macs: float | None) -> list:
    """The shortest prefix of ``chosen`` (lowest scores first) whose removal is predicted to meet
    every size target (fractions of ``base`` = (params, MACs)): a fixed step size would overshoot
    the target on its last step and remove maps the target does not ask for. Empty when the
    targets are met already; all of ``chosen`` without targets. Costs are each map's saving at the
    current sizes (an estimate when several groups shrink)."""
    if target_params is None and target_macs is None:
        return chosen
    if targets_met(graph, base, target_params, target_macs):
        return []
    need_params = graph.total_params() - target_params * base[0] if target_params is not None else 0
    need_macs = graph.total_macs() - target_macs * base[1] if target_macs is not None else 0
    saved_params = saved_macs = 0
    for i, s in enumerate(chosen):
        params, macs = graph.map_cost(s.layer)
        saved_params, saved_macs = saved_params + params, saved_macs + macs
        if saved_params >= need_params and saved_macs >= need_macs:
            return chosen[:i + 1]
    return chosen
