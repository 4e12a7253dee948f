"""The public pruning graph: dependency groups of a traced model, their costs, and removal.

A *group* is a set of maps that must go together: the output channels of every producer tied by
a residual add, the BatchNorm entries after them, the matching input slices of every consumer
(through concatenations, splits and flattens). ``Graph.remove`` cuts them all, in place, through
each layer's adapter; the model stays a plain ``nn.Module``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import fx, nn

from ..errors import PruningError
from ..layers import LayerAdapter, ParameterAdapter
from ..modes import eval_mode
from ..surgery import keep_indices
from .trace import LayerRecord, TraceResult, trace_labels


@dataclass
class Group:
    """Maps that are removed together; ``name`` is the qualified name of its first producer."""

    name: str
    roots: list[int]                    # the maps, in order: one root label each
    original: list[int]                 # each map's index in the numbering at trace time
    records: list[LayerRecord] = field(repr=False, default_factory=list)

    def __post_init__(self) -> None:
        self.traced_size = len(self.roots)

    @property
    def size(self) -> int:
        return len(self.roots)


@dataclass(frozen=True)
class Member:
    """A layer producing (some of) a group's maps: where criteria read weights and feature maps.
    ``index[p]`` is the group map that output position ``p`` belongs to (-1: another group);
    ``axis`` is the channel axis of its feature maps (1, or the last in a channels-last block)."""

    name: str
    module: nn.Module
    adapter: LayerAdapter
    feature_node: fx.Node
    index: torch.Tensor
    axis: int = 1


@dataclass(frozen=True)
class LayerCost:
    """One row of ``fmprune count``."""

    name: str
    kind: str
    maps: int | None          # output maps of a producer; None for per-channel layers
    weights: int
    biases: int
    macs: int

    @property
    def params(self) -> int:
        return self.weights + self.biases


class Graph:
    """Dependency groups of ``model``; obtain one with :func:`fmprune.trace`."""

    def __init__(self, model: nn.Module, result: TraceResult, example_inputs: tuple,
                 ignore: Sequence[str] = ()) -> None:
        self.model = model
        self.ignore = list(ignore)
        self.graph_module = result.graph_module
        self.example_inputs = example_inputs
        self.notes = list(result.notes)
        self._records = result.records
        for r in self._records:   # from labels to roots once; removal then only compares roots
            r.inputs = None if r.inputs is None else result.union.roots(r.inputs)
            r.outputs = None if r.outputs is None else result.union.roots(r.outputs)
        # the root of a map is its earliest label, created by the map's first producer
        self._groups = self._build_groups(result.pinned, result.origin)

    # -- construction
    def _build_groups(self, pinned: set[int], owner_of_root: dict[int, str]) -> list[Group]:
        signature: dict[int, set[tuple[int, str]]] = defaultdict(set)
        for i, r in enumerate(self._records):
            for role, arr in (("in", r.inputs), ("out", r.outputs)):
                if arr is not None:
                    for root in set(arr.tolist()) - pinned:
                        signature[root].add((i, role))
        by_signature: dict[frozenset, list[int]] = defaultdict(list)
        for root, sig in signature.items():
            by_signature[frozenset(sig)].append(root)
        record_index = {r.name: i for i, r in enumerate(self._records)}
        groups: list[tuple[tuple[int, int], Group]] = []
        for sig, roots in by_signature.items():
            owner = owner_of_root.get(min(roots), "")
            owner_record = self._records[record_index[owner]] if owner in record_index else None
            position = _first_positions(owner_record.outputs if owner_record is not None else None, roots)
            roots.sort(key=lambda r: (position.get(r, 1 << 62), r))
            records = [self._records[i] for i in sorted({i for i, _ in sig})]
            order = (record_index.get(owner, len(self._records)), min(position.values(), default=0))
            groups.append((order, Group(owner, roots, list(range(len(roots))), records)))
        groups.sort(key=lambda t: t[0])
        seen: dict[str, int] = defaultdict(int)
        out = []
        for _, g in groups:
            seen[g.name] += 1
            if seen[g.name] > 1:   # one producer whose maps split into independent groups
                g.name = f"{g.name}#{seen[g.name] - 1}"
            out.append(g)
        return out

    # -- the public view
    @property
    def groups(self) -> list[Group]:
        """The prunable groups, in a stable order (graph order of their first producer)."""
        return list(self._groups)

    def group(self, name: str) -> Group:
        for g in self._groups:
            if g.name == name:
                return g
        if any(r.name == name for r in self._records):
            raise PruningError(f"layer {name!r} is not prunable: its maps are kept (the output layer, or tied "
                               f"to the input, a constant or an ignored op); prunable groups: {', '.join(self.names) or 'none'}")
        raise PruningError(f"unknown group {name!r} (groups: {', '.join(self.names) or 'none'})")

    @property
    def names(self) -> list[str]:
        return [g.name for g in self._groups]

    def scope(self, spec: str) -> list[str]:
        """Group names of a scope: ``all``, or one or more names separated by commas."""
        if spec == "all":
            return self.names
        names = [s.strip() for s in spec.split(",") if s.strip()]
        for n in names:
            self.group(n)
        return names

    def alive(self, name: str) -> list[int]:
        """Indices (trace-time numbering) of the maps of group ``name`` still there."""
        return list(self.group(name).original)

    def sizes(self) -> dict[str, int]:
        return {g.name: g.size for g in self._groups}

    def adopt_numbering(self, earlier: Sequence[Group]) -> bool:
        """Number this graph's maps as ``earlier`` (the groups of an earlier trace of the same
        model, e.g. of its unpruned form) numbers them, sizes at trace time included, so a model
        traced again after pruning reports and saves original indices. Only when both have the
        same groups with the same sizes; returns whether it did."""
        by_name = {g.name: g for g in earlier}
        if sorted(by_name) != sorted(self.names) or any(by_name[g.name].size != g.size for g in self._groups):
            return False
        for g in self._groups:
            g.original, g.traced_size = list(by_name[g.name].original), by_name[g.name].traced_size
        return True

    # -- removal
    def remove(self, name: str, indices: Sequence[int],
               optimizer: torch.optim.Optimizer | None = None) -> torch.Tensor:
        """Physically remove maps ``indices`` (current numbering) of group ``name`` from every
        layer of the group, in place; slice ``optimizer``'s state with them. Returns the kept
        indices (current numbering)."""
        g = self.group(name)
        keep = keep_indices(g.size, list(indices), name)
        kept = set(keep.tolist())
        removed = np.array([r for i, r in enumerate(g.roots) if i not in kept], dtype=np.int64)
        self._fold_residues(g, removed)
        for record in g.records:
            keep_in = _keep_positions(record.inputs, removed)
            keep_out = _keep_positions(record.outputs, removed)
            if keep_in is None and keep_out is None:
                continue
            record.adapter.prune(record.module, keep_in, keep_out, optimizer)
            if keep_in is not None:
                record.inputs = record.inputs[keep_in.numpy()]
                record.residue = None if record.residue is None else record.residue[keep_in.numpy()]
            if keep_out is not None:
                record.outputs = record.outputs[keep_out.numpy()]
        g.roots = [g.roots[i] for i in keep.tolist()]
        g.original = [g.original[i] for i in keep.tolist()]
        return keep

    def _fold_residues(self, g: Group, removed: np.ndarray) -> None:
        """Before cutting: where a removed map reaches a consumer as a constant (a Linear over the
        spatial axis added its bias to it), fold that constant into the consumer, as the model
        with the map zeroed computes it."""
        consumers = [(r, torch.from_numpy(np.flatnonzero(r.residue & np.isin(r.inputs, removed))))
                     for r in g.records if r.residue is not None]
        consumers = [(r, pos) for r, pos in consumers if len(pos)]
        if not consumers:
            return
        # a tensor of the model (ParameterAdapter) is not zeroed in the reference: a removed map
        # holds it there; an attention's heads (inner) are no output of the module
        zeroed = {r.module: torch.from_numpy(np.flatnonzero(np.isin(r.outputs, removed)))
                  for r in g.records if r.outputs is not None and np.isin(r.outputs, removed).any()
                  and not isinstance(r.adapter, ParameterAdapter) and not getattr(r.adapter, "inner", False)}
        values = _inputs_when_zeroed(self.model, self.example_inputs, zeroed, consumers)
        for (r, pos), value in zip(consumers, values):
            r.adapter.fold_constant(r.module, pos, value)

    def positions(self, name: str, indices: Sequence[int]) -> dict[str, dict[str, list[int]]]:
        """Where maps ``indices`` (current numbering) of group ``name`` sit in each of its layers:
        ``{layer: {"in": [...], "out": [...]}}`` positions of their input/output channel axes
        (e.g. to mask instead of remove)."""
        g = self.group(name)
        roots = np.array([g.roots[int(i)] for i in indices], dtype=np.int64)
        out: dict[str, dict[str, list[int]]] = {}
        for r in g.records:
            out[r.name] = {role: (np.flatnonzero(np.isin(arr, roots)).tolist() if arr is not None else [])
                           for role, arr in (("in", r.inputs), ("out", r.outputs))}
        return out

    # -- what criteria read
    def members(self, name: str, feature_maps: bool = True) -> list[Member]:
        """The layers producing group ``name``'s maps (convs, linears; not BatchNorm).
        ``feature_maps=False`` also gives producers without a feature map to read (attention
        heads: weight criteria still score them through their adapter's ``filters``)."""
        g = self.group(name)
        index_of = {root: j for j, root in enumerate(g.roots)}
        out = []
        for r in g.records:
            if r.outputs is None or r.adapter.channelwise or (feature_maps and r.feature_node is None):
                continue
            index = torch.tensor([index_of.get(root, -1) for root in r.outputs.tolist()], dtype=torch.long)
            if (index >= 0).any():
                out.append(Member(r.name, r.module, r.adapter, r.feature_node, index, r.axis))
        return out

    # -- costs
    def _layer_cost(self, r: LayerRecord, d_in: int = 0, d_out: int = 0) -> tuple[int, int]:
        n_in = len(r.inputs) if r.inputs is not None else 0
        n_out = len(r.outputs) if r.outputs is not None else 0
        params = macs = 0
        for i, shape in enumerate(r.output_shapes):
            p, m = r.adapter.cost(r.module, shape, n_in - d_in, n_out - d_out)
            params = p if i == 0 else params
            macs += m
        return params, macs

    def map_cost(self, name: str) -> tuple[int, int]:
        """(parameters, MACs per example) that removing one map of group ``name`` saves now."""
        g = self.group(name)
        if not g.roots:
            return 0, 0
        root = g.roots[0]
        params = macs = 0
        for r in g.records:
            d_in = int((r.inputs == root).sum()) if r.inputs is not None else 0
            d_out = int((r.outputs == root).sum()) if r.outputs is not None else 0
            p0, m0 = self._layer_cost(r)
            p1, m1 = self._layer_cost(r, d_in, d_out)
            params, macs = params + p0 - p1, macs + m0 - m1
        return params, macs

    def layer_widths(self) -> dict[str, tuple[int, int]]:
        """(input positions, output positions) of every layer with an adapter now, by its channel
        labels (0 where the layer is no member: e.g. a leaf whose maps are kept); what a latency
        table is read at (:mod:`fmprune.latency`)."""
        return {r.name: (len(r.inputs) if r.inputs is not None else 0,
                         len(r.outputs) if r.outputs is not None else 0)
                for r in self._records if not getattr(r.adapter, "inner", False)}

    def macs_per_map(self) -> dict[str, int]:
        return {g.name: self.map_cost(g.name)[1] for g in self._groups}

    def params_per_map(self) -> dict[str, int]:
        return {g.name: self.map_cost(g.name)[0] for g in self._groups}

    def total_macs(self) -> int:
        """Multiply-accumulates per example of every layer with an adapter."""
        return sum(self._layer_cost(r)[1] for r in self._records)

    def total_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def layer_costs(self) -> list[LayerCost]:
        """Per-layer rows: producers with their maps, per-channel layers (BatchNorm) too."""
        rows = []
        for r in self._records:
            if getattr(r.adapter, "inner", False):   # an attention's heads: its own row has their cost
                continue
            _, macs = self._layer_cost(r)
            own = dict(r.module.named_parameters(recurse=False))
            weight = own.get("weight")
            weights = weight.numel() if weight is not None and not r.adapter.channelwise else 0
            biases = sum(p.numel() for p in own.values()) - weights
            maps = None if r.adapter.channelwise else (len(r.outputs) if r.outputs is not None else None)
            rows.append(LayerCost(r.name, type(r.module).__name__, maps, weights, biases, macs))
        return rows

    def is_chain(self) -> bool:
        """Every group is one producer feeding the next layer only (LeNet-like)."""
        return all(sum(1 for r in g.records if not r.adapter.channelwise) == 2 for g in self._groups)


def _inputs_when_zeroed(model: nn.Module, examples: tuple, zeroed: dict[nn.Module, torch.Tensor],
                        consumers: list[tuple[LayerRecord, torch.Tensor]]) -> list[torch.Tensor]:
    """What each consumer reads at its positions when the ``zeroed`` output positions of those
    modules are zero: one eval-mode forward of the example inputs (nothing changes). The tracer
    only lets constants of the model through, so the values must agree across the batch."""
    captured: dict[int, torch.Tensor] = {}

    def zero(positions: torch.Tensor):
        return lambda module, args, out: out.index_fill(1, positions.to(out.device), 0)

    def capture(i: int, positions: torch.Tensor):
        def hook(module, args):
            captured.setdefault(i, args[0].index_select(1, positions.to(args[0].device)))
        return hook

    hooks = [m.register_forward_hook(zero(pos)) for m, pos in zeroed.items()]
    hooks += [r.module.register_forward_pre_hook(capture(i, pos)) for i, (r, pos) in enumerate(consumers)]
    first = next(model.parameters())
    try:
        with eval_mode(model), torch.no_grad():
            model(*[x.to(first.device, first.dtype) if torch.is_tensor(x) and x.is_floating_point() else x
                    for x in examples])
    finally:
        for h in hooks:
            h.remove()
    values = []
    for i, (r, _) in enumerate(consumers):
        value = captured[i]
        if value.dim() != 2 or not bool((value == value[:1]).all()):
            raise PruningError(f"{r.name!r}: a removed map does not reach it as a constant; "
                               "trace the model again with that op in ignore=[...]")
        values.append(value[0])
    return values


def _keep_positions(arr: np.ndarray | None, removed: np.ndarray) -> torch.Tensor | None:
    if arr is None:
        return None
    mask = ~np.isin(arr, removed)
    if mask.all():
        return None
    return torch.from_numpy(np.flatnonzero(mask))


def _first_positions(arr: np.ndarray | None, roots: list[int]) -> dict[int, int]:
    if arr is None:
        return {}
    wanted = set(roots)
    out: dict[int, int] = {}
    for pos, root in enumerate(arr.tolist()):
        if root in wanted and root not in out:
            out[root] = pos
    return out


def trace(model: nn.Module, example_inputs: Any, ignore: Sequence[str] = ()) -> Graph:
    """Trace ``model`` on ``example_inputs`` (a tensor or a tuple) into its dependency groups.

    Raises :class:`fmprune.UnsupportedModelError` naming the op, before anything is changed, when
    the model contains something fmprune cannot prune safely; ``ignore`` lists module or node
    names to keep as they are (the maps through them are never removed)."""
    examples = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    return Graph(model, trace_labels(model, examples, ignore), examples, ignore)
