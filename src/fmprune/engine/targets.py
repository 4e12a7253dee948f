"""How small a scope can make a model: the floor below which a size target cannot be met."""

from __future__ import annotations

import copy

from ..errors import FmpruneError
from ..graph import Graph, trace
from ..latency import LatencyTarget
from .selection import allowed_size


def check_target_fraction(name: str, target: float | None) -> None:
    """A size target is a fraction in (0, 1] of the model's size (None: not given); one wording
    for the library's two entry points, the Pruner and ``fmprune.prune``."""
    ok = isinstance(target, (int, float)) and not isinstance(target, bool) and 0 < target <= 1
    if target is not None and not ok:
        raise FmpruneError(f"{name} must be a fraction in (0, 1] of the model's size, got {target!r}")


def smallest_size(graph: Graph, scope: list[str], round_to: int = 1) -> tuple[int, int]:
    """(params, MACs) with every group of ``scope`` down to its smallest allowed size (one map;
    with ``round_to``, ``round_to`` maps, or its original size when smaller), measured on a copy
    (the model itself is untouched)."""
    model = copy.deepcopy(graph.model)
    device = next(iter(model.parameters()), graph.example_inputs[0]).device
    copy_graph = trace(model, tuple(t.to(device) for t in graph.example_inputs), ignore=graph.ignore)
    for name in scope:
        original = graph.group(name).traced_size
        keep = min(copy_graph.group(name).size, round_to if original >= round_to else original)
        if copy_graph.group(name).size > keep:
            copy_graph.remove(name, list(range(keep, copy_graph.group(name).size)))
    return copy_graph.total_params(), copy_graph.total_macs()


def targets_met(graph: Graph, base: tuple[int, int], target_params: float | None,
                target_macs: float | None, latency: LatencyTarget | None = None) -> bool:
    """Every size target given (fractions of ``base`` = (params, MACs)) and the ``latency``
    target (predicted by its table) are met; False with none given. Both together mean both: a
    model ×80 smaller must also be ×7 cheaper. Sizes are counted only for the targets given
    (this runs every step)."""
    met = []
    if target_params is not None:
        met.append(graph.total_params() <= target_params * base[0])
    if target_macs is not None:
        met.append(graph.total_macs() <= target_macs * base[1])
    if latency is not None:
        met.append(latency.missing(graph) <= 0)
    return bool(met) and all(met)


def trim_to_target(graph: Graph, chosen: list, base: tuple[int, int], target_params: float | None,
                   target_macs: float | None, latency: LatencyTarget | None = None, round_to: int = 1) -> list:
    """The shortest prefix of ``chosen`` (lowest scores first) whose removal is predicted to meet
    every size target (fractions of ``base`` = (params, MACs)) and the ``latency`` target: a
    fixed step size would overshoot the target on its last step and remove maps the target does
    not ask for. Empty when the targets are met already; all of ``chosen`` without targets. Sizes
    are summed from each map's saving at the current sizes (an estimate when several groups
    shrink); latency is the table's prediction of the model each prefix leaves
    (:class:`~fmprune.latency.LatencyWalk`: one-map savings do not add up across grid points). With
    ``round_to``, the prefix ends where every group's size is allowed (after a whole chunk of
    :func:`~fmprune.engine.selection.round_selection`)."""
    if target_params is None and target_macs is None and latency is None:
        return chosen
    if targets_met(graph, base, target_params, target_macs, latency):
        return []
    need_params = graph.total_params() - target_params * base[0] if target_params is not None else 0
    need_macs = graph.total_macs() - target_macs * base[1] if target_macs is not None else 0
    saving: dict[str, tuple[int, int]] = {}   # per group, at the current sizes
    saved_params = saved_macs = 0
    walk = latency.table.walk(graph) if latency is not None else None   # the table's own prediction of each prefix
    removed: dict[str, int] = {}
    for i, s in enumerate(chosen):
        if s.layer not in saving:
            saving[s.layer] = graph.map_cost(s.layer)
        params, macs = saving[s.layer]
        saved_params, saved_macs = saved_params + params, saved_macs + macs
        fast_enough = walk is None or walk.remove(s.layer) <= latency.fraction * latency.base_ms
        removed[s.layer] = removed.get(s.layer, 0) + 1
        group = graph.group(s.layer)
        whole = allowed_size(group.size - removed[s.layer], group.traced_size, round_to)
        if whole and saved_params >= need_params and saved_macs >= need_macs and fast_enough:
            return chosen[:i + 1]
    return chosen
