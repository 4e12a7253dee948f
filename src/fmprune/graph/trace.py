"""From a model to its dependency groups: trace with torch.fx (or record one forward pass, see
``capture``), then let channel *labels* flow.

Every tensor's channel axis (dim 1) carries one integer label per position. A layer that creates
maps (Conv2d, Linear) gives its output fresh labels; channel-wise ops pass labels through; a
concatenation concatenates them; a split or static slice slices them; a flatten repeats each
label H·W times (channel-major); elementwise arithmetic *unifies* the labels of its operands
position by position (union-find). After the pass, two positions anywhere in the model belong to
the same map exactly when their labels share a root, so removal needs no index bookkeeping:
every layer keeps the positions whose root was not removed. That is what makes concat offsets,
flatten expansion and residual coupling correct by construction.

Maps that must never go are *pinned*: the model's inputs and outputs, constants, and what an
ignored or channel-mixing op touches. A pinned root is never part of a group.

Removing a map must give the model whose removed map is zero at the output of every layer of its
group. Most ops keep a zero map zero, but some leave something behind (sigmoid(0) = 0.5, a Linear
over the spatial axis adds its bias, ``x + 1``): every label also carries a *residue*, what its
position holds once the map is removed (ZERO, a CONST of the model, or DATA). A layer creating new
maps from a position whose residue is not zero would lose that contribution: a constant is folded
into its bias on removal when the adapter can do it exactly (``LayerAdapter.folds_constants``),
anything else is pinned.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import PruningError, UnsupportedModelError, first_line
from ..modes import eval_mode
from ..layers import (AttentionHeadsAdapter, LayerAdapter, MultiheadAttentionAdapter, ParameterAdapter,
                      adapter_for)
from . import ops
from .capture import DECIDES, capture

Labels = np.ndarray

# what a position holds once its map is removed (zero at the output of every layer of its group)
ZERO, CONST, DATA = 0, 1, 2


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: Labels, b: Labels) -> None:
        for x, y in zip(a.ravel().tolist(), b.ravel().tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:   # the earlier label stays root: groups are named after the first producer
                self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self, labels: Labels) -> Labels:
        return np.fromiter((self.find(x) for x in labels.tolist()), dtype=np.int64, count=len(labels))


@dataclass(frozen=True)
class Moved:
    """The labels of a tensor whose channels are not (only) its axis 1: after a permute to
    channels-last (one axis, 3 of NHWC) or a view splitting the channel axis (ShuffleNet's
    (B, g, C/g, H, W): a block of labels over axes 1 and 2, one array axis per tensor axis,
    starting at ``axis``). Only ops that follow layouts read it; any other refuses the model."""

    labels: np.ndarray
    axis: int


@dataclass
class LayerRecord:
    """A module with an adapter, as the traced graph uses it."""

    name: str
    module: nn.Module
    adapter: LayerAdapter
    nodes: list[fx.Node] = field(default_factory=list)
    inputs: Labels | None = None          # labels of its input channel axis (None: not a member)
    outputs: Labels | None = None
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    feature_node: fx.Node | None = None   # where its maps are read (after norms/activations)
    residue: np.ndarray | None = None     # input positions holding a constant once removed (folded)
    axis: int = 1                         # the channel axis of its input and output (channels-last: the last)


@dataclass
class TraceResult:
    graph_module: fx.GraphModule
    records: list[LayerRecord]
    union: _UnionFind
    pinned: set[int]
    origin: dict[int, str]     # label -> module that created it
    notes: list[str]


def _as_tuple(example_inputs: Any) -> tuple:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


class _ShapeAndZeroProp(ShapeProp):
    """ShapeProp that also records, for each op passing channels through one by one (activations,
    padding, a layer over a non-channel axis), whether it maps zeros to zeros
    (``node.meta['keeps_zero']``): if not, a removed map leaves a residue behind it. The op is
    called once more on zeros with its real other arguments, so no list of ops has to know."""

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        op = self._channel_by_channel(n, args)
        if op is not None:
            try:
                out = op(torch.zeros_like(args[0]), *args[1:], **kwargs)
                n.meta["keeps_zero"] = torch.is_tensor(out) and not bool(out.any())
            except Exception:   # noqa: BLE001 - unknown: the residue is then taken as a constant
                n.meta["keeps_zero"] = False
        return result

    def _channel_by_channel(self, n: fx.Node, args: tuple) -> Any:
        if not args or not torch.is_tensor(args[0]):
            return None
        if n.op == "call_function" and (ops.is_unary_function(n.target) or n.target in ops.PAD_FUNCTIONS):
            return n.target
        if n.op == "call_method" and n.target in ops.UNARY_METHODS:
            return lambda x, *a, **k: getattr(x, n.target)(*a, **k)
        if n.op == "call_module":
            module = self.fetch_attr(n.target)
            adapter = adapter_for(module)
            if ops.is_unary_module(module) or (adapter is not None and adapter.channel_axis(module, args[0].dim()) != 1):
                return module
        return None


def propagate_shapes(gm: fx.GraphModule, model: nn.Module, example_inputs: tuple) -> None:
    """Record every node's output shape (node.meta['tensor_meta']) with one eval-mode forward
    that changes nothing: no gradients, BatchNorm statistics untouched, train flags restored."""
    try:   # ShapeProp prints the traceback of a failing node itself; the error below says it all
        with eval_mode(model), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            _ShapeAndZeroProp(gm).propagate(*example_inputs)
    except Exception as e:  # noqa: BLE001
        root = e
        while root.__cause__ is not None:   # ShapeProp wraps the op's own error: quote that one
            root = root.__cause__
        node = re.search(r"node=%(\S+)", str(e))
        where = f" at {node.group(1)}" if node and root is not e else ""
        raise UnsupportedModelError(f"{type(model).__name__} does not run on the example inputs "
                                    f"({type(root).__name__}{where}: {first_line(root) or 'no message'})") from None


def _piece_shapes(node: fx.Node) -> list[tuple[int, ...]] | None:
    """Shapes of a node that returns several tensors (split), else None."""
    meta = node.meta.get("tensor_meta")
    if meta is None or hasattr(meta, "shape") or not isinstance(meta, (tuple, list)):
        return None
    return [tuple(m.shape) if hasattr(m, "shape") else () for m in meta]


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class LabelFlow:
    """One pass over the traced graph that assigns channel labels to every tensor."""

    def __init__(self, gm: fx.GraphModule, ignore: Iterable[str], model: nn.Module | None = None) -> None:
        self.gm = gm
        self.model = model if model is not None else gm   # whose parameters removal cuts
        self.modules = dict(gm.named_modules())
        self.ignore = tuple(ignore)
        self.union = _UnionFind()
        self.pinned_labels: list[Labels] = []
        self._reasons: list[tuple[Labels, str]] = []
        self.origin: dict[int, str] = {}
        self.labels: dict[fx.Node, Any] = {}     # node -> Labels | list[Labels] | None
        self.records: dict[str, LayerRecord] = {}
        self.residue: dict[int, int] = {}        # label -> CONST | DATA (absent: ZERO)
        self._current = ""

    # -- LabelContext for adapters
    def fresh(self, n: int) -> Labels:
        out = self.union.add(n)
        for x in out.tolist():
            self.origin[x] = self._current
        return out

    def pin(self, labels: Labels, reason: str) -> None:
        if labels is not None and len(labels):
            self.pinned_labels.append(labels)
            self._reasons.append((labels, reason))

    # -- residues: what a position holds once its map is removed
    def _states(self, labels: Labels) -> np.ndarray:
        flat = labels.ravel().tolist()
        return np.fromiter((self.residue.get(x, ZERO) for x in flat), dtype=np.int8, count=len(flat)).reshape(labels.shape)

    def _with_states(self, labels: Labels | None, states: np.ndarray) -> Labels | None:
        """``labels`` whose positions hold ``states`` once removed: the same maps (new labels in
        their sets) when that differs from what the labels hold already."""
        if labels is None or np.array_equal(self._states(labels), states):
            return labels
        out = self.union.add(labels.size).reshape(labels.shape)
        self.union.union(labels, out)
        self.residue.update((x, int(s)) for x, s in zip(out.ravel().tolist(), states.ravel().tolist()) if s != ZERO)
        return out

    def _through(self, node: fx.Node, labels: Labels | None) -> Labels | None:
        """Labels after an op that maps channel i to channel i: a zero map stays zero only if the
        op maps zeros to zeros (not sigmoid, a bias, padding with a value)."""
        if labels is None or node.meta.get("keeps_zero", False):
            return labels
        return self._with_states(labels, np.maximum(self._states(labels), CONST))

    # -- the pass
    def run(self) -> TraceResult:
        for node in self.gm.graph.nodes:
            self._current = str(node.target) if node.op == "call_module" else node.name
            self.labels[node] = self._visit(node)
            self._pin_decisive(node)
        pinned = {self.union.find(x) for arr in self.pinned_labels for x in arr.tolist()}
        # a note only where it costs prunable maps: not for what the input/output pins anyway
        records = [r for r in self.records.values() if r.outputs is not None or r.inputs is not None]
        # a note only where it costs prunable maps: maps some layer holds, not pinned anyway by
        # the input/output (a constant's own labels, e.g. a (C, 1, 1) tensor's, cost nothing)
        held = {self.union.find(x) for r in records for arr in (r.inputs, r.outputs) if arr is not None
                for x in arr.tolist()}
        silent = {self.union.find(x) for arr, why in self._reasons if not why for x in arr.tolist()}
        notes = list(dict.fromkeys(why for arr, why in self._reasons if why and any(
            (root := self.union.find(x)) in held and root not in silent for x in arr.tolist())))
        for r in records:
            r.feature_node = _feature_node(_tensor_output(r.nodes[0]), self.modules) if r.nodes else None
        return TraceResult(self.gm, records, self.union, pinned, self.origin, notes)

    def _pin_decisive(self, node: fx.Node) -> None:
        """Keep the maps of a tensor whose channel count a Python decision of a recorded graph
        read (``capture.DECIDES``): with one map fewer the model would decide otherwise."""
        layout, shape = self._layout(node), _shape(node)
        if layout is None or shape is None:
            return
        labels, axis = layout
        for read, why in node.meta.get(DECIDES, ()):
            if read is None or axis <= read % len(shape) < axis + labels.ndim:
                self.pin(labels.ravel(), f"{why}: the maps it counts are kept")

    def _visit(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return self._constant(node, "")   # the input's channels are the data's
        if node.op == "get_attr":
            return self._constant(node, f"maps combined with the constant tensor {node.target!r} are kept")
        if node.op == "output":
            for arg in _flat_nodes(node.args):
                self._pin_all(arg, "")   # the output layer is never a group
            return None
        if self._ignored(node):
            return self._opaque(node, f"ignored {self._describe(node)}: the maps through it are kept")
        if node.op == "call_function" and node.target is getattr:
            return None   # x.shape and friends
        if node.op != "call_module" and _shape(node) is None and _piece_shapes(node) is None:
            return None   # not a tensor (sizes, shapes, python numbers)
        if self._reads_moved(node) and not self._follows_layouts(node):
            raise self._unsupported(node, "it reads channels a permute, transpose or view moved off axis 1")
        if node.op == "call_module":
            return self._call_module(node)
        return self._call(node)

    # -- layouts: where the channel labels of a tensor lie
    def _layout(self, node: Any) -> tuple[np.ndarray, int] | None:
        """(labels, first axis they cover) of a tensor: axis 1 unless a permute or view moved them."""
        return _layout_of(self.labels.get(node) if isinstance(node, fx.Node) else None)

    @staticmethod
    def _store(labels: Labels | None, axis: int) -> Labels | Moved | None:
        """Labels on axis 1 as a plain array (what every other op reads), else ``Moved``."""
        if labels is None or (axis == 1 and labels.ndim == 1):
            return labels
        return Moved(labels, axis)

    def _reads_moved(self, node: fx.Node) -> bool:
        return any(isinstance(self.labels.get(a), Moved) for a in _flat_nodes((node.args, node.kwargs)))

    def _follows_layouts(self, node: fx.Node) -> bool:
        """Ops that read labels on any axis: per-value ops, arithmetic, permutes, views, layers."""
        target = node.target
        if node.op == "call_module":
            module = self.modules[target]
            return adapter_for(module) is not None or ops.is_elementwise_module(module)
        if node.op == "call_method":
            return target in (ops.ELEMENTWISE_METHODS | ops.BINARY_METHODS | ops.PERMUTE_METHODS | ops.RESHAPE_METHODS
                              | ops.EXPAND_METHODS | ops.SPLIT_METHODS)
        return (ops.is_elementwise_function(target) or target in ops.BINARY_FUNCTIONS | ops.PERMUTE_FUNCTIONS
                | ops.RESHAPE_FUNCTIONS | ops.FLATTEN_FUNCTIONS | ops.CAT_FUNCTIONS | ops.SPLIT_FUNCTIONS
                or target is ops.GETITEM)

    def _constant(self, node: fx.Node, reason: str) -> Labels | None:
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        labels = self.fresh(shape[1])
        self.pin(labels, reason)
        return labels

    def _opaque(self, node: fx.Node, reason: str) -> Any:
        """Pin everything going in; what comes out gets new pinned labels."""
        for arg in _flat_nodes((node.args, node.kwargs)):
            self._pin_all(arg, reason)
        pieces = _piece_shapes(node)
        if pieces is not None:
            return [self._pinned_fresh(shape, reason) for shape in pieces]
        return self._pinned_fresh(_shape(node) or (), reason)

    def _pinned_fresh(self, shape: tuple[int, ...], reason: str) -> Labels | None:
        if len(shape) < 2:
            return None
        labels = self.fresh(shape[1])
        self.pin(labels, reason)
        return labels

    def _tensor_labels(self, node: Any) -> Labels | None:
        value = self.labels.get(node) if isinstance(node, fx.Node) else None
        return value if isinstance(value, np.ndarray) else None

    def _sequence_labels(self, node: Any) -> list[Labels | Moved | None] | None:
        """The labels of each tensor of a node holding a sequence (a split, a slice of one), else None."""
        value = self.labels.get(node) if isinstance(node, fx.Node) else None
        return list(value) if isinstance(value, list) else None

    def _pin_all(self, node: Any, reason: str) -> None:
        """Pin what ``node`` carries, one tensor (on any axis) or a sequence of them (a split
        returned as is)."""
        for value in self._sequence_labels(node) or [self.labels.get(node) if isinstance(node, fx.Node) else None]:
            layout = _layout_of(value)
            self.pin(None if layout is None else layout[0].ravel(), reason)

    # -- modules
    def _call_module(self, node: fx.Node) -> Any:
        module = self.modules[node.target]
        adapter = adapter_for(module)
        if isinstance(adapter, MultiheadAttentionAdapter):
            return self._call_attention(node, module, adapter)
        if adapter is not None:
            return self._call_layer(node, module, adapter)
        if ops.is_unary_module(module):
            return self._unary(node)
        if ops.is_flatten_module(module):
            start = getattr(module, "start_dim", 1)
            end = getattr(module, "end_dim", -1)
            if start == 1 and end in (-1, len(_shape(node.args[0]) or ()) - 1):
                return self._reshape(node, static=True)
        raise self._unsupported(node)

    def _call_layer(self, node: fx.Node, module: nn.Module, adapter: LayerAdapter) -> Any:
        name = str(node.target)
        source = node.args[0] if node.args else None
        in_shape, out_shape = _shape(source), _shape(node)
        layout = self._layout(source)
        if in_shape is None or out_shape is None or layout is None:
            if in_shape is not None and out_shape is not None and in_shape[:2] == out_shape[:2]:
                return None   # no channels to follow
            return self._opaque(node, f"{self._describe(node)} does not act on the channel axis: the maps through it are kept")
        inputs, axis = layout
        layer_axis = adapter.channel_axis(module, len(in_shape))
        if layer_axis is None or layer_axis % len(in_shape) != axis or inputs.ndim != 1:
            return self._beside(node, inputs, axis, layer_axis)
        record = self.records.get(name)
        if record is None:
            record = self.records[name] = LayerRecord(name, module, adapter)
        record.nodes.append(node)
        record.output_shapes.append(out_shape)
        record.axis = axis
        first_new = len(self.union.parent)
        outputs = adapter.output_labels(module, inputs, self, name)
        if len(outputs) and int(outputs.min()) >= first_new:   # new maps, computed from its inputs
            self._read_residues(record, inputs)
        else:   # its outputs are its inputs' maps, zeroed with them at this layer
            outputs = self._with_states(outputs, np.zeros(len(outputs), dtype=np.int8))
        if record.inputs is None:
            record.inputs, record.outputs = inputs, outputs
        else:   # the same layer called again: both calls see the same maps
            self.union.union(record.inputs, inputs)
            self.union.union(record.outputs, outputs)
            outputs = record.outputs
        return self._store(outputs, axis)

    def _beside(self, node: fx.Node, labels: Labels, axis: int, layer_axis: int | None) -> Any:
        """A layer whose own axis is not the one carrying the labels. A layer over the last axis
        alone (a Linear, a LayerNorm) computes each row on its own, so labels on another axis
        pass through (a Linear over the spatial axis of (N, C, L)); so do they through a layer
        whose adapter says it leaves axis 1 alone. Anything else mixes them: kept."""
        in_shape, out_shape = _shape(node.args[0]), _shape(node)
        rank = len(in_shape)
        if layer_axis is not None and layer_axis % rank == rank - 1 and axis + labels.ndim <= rank - 1 \
                and in_shape[:-1] == out_shape[:-1]:
            return self._store(self._through(node, labels), axis)
        if layer_axis is None and axis == 1 and labels.ndim == 1 and in_shape[:2] == out_shape[:2]:
            return self._through(node, labels)
        return self._opaque(node, f"{self._describe(node)} does not act on the channel axis: the maps through it are kept")

    def _call_attention(self, node: fx.Node, module: nn.Module, adapter: MultiheadAttentionAdapter) -> Any:
        """``nn.MultiheadAttention(query, key, value, ...)``, returning (output, weights). Its
        embedding is the last axis of query, key and value (the same positions of in_proj's
        columns: one map each) and of its output (out_proj's rows, new maps); its heads are maps
        of a record of their own, a group owned by the module. What the adapter cannot cut (other
        in_proj layouts), masks and a use of the averaged attention weights keep what they touch."""
        name = str(node.target)
        query, key, value = (node.args[i] if len(node.args) > i else node.kwargs.get(k)
                             for i, k in enumerate(("query", "key", "value")))
        pieces = _piece_shapes(node)
        layouts = [self._layout(t) for t in (query, key, value)]
        rank = len(_shape(query) or ())
        if not pieces or rank not in (2, 3) or any(
                lay is None or lay[0].ndim != 1 or lay[1] != rank - 1 for lay in layouts):
            return self._opaque(node, f"{self._describe(node)} does not read channels on its last axis: "
                                      "the maps through it are kept")
        why = f"{self._describe(node)}: what it reads besides query, key and value is kept"
        for extra in _flat_nodes((node.args[3:], {k: v for k, v in node.kwargs.items()
                                                  if k not in ("query", "key", "value")})):
            self._pin_all(extra, why)
        inputs = layouts[0][0]
        for labels, _ in layouts[1:]:
            if adapter.supported(module) and labels.shape == inputs.shape:
                self.union.union(inputs, labels)   # in_proj's column i reads position i of all three
            else:
                self.pin(labels, f"attention {name!r} projects key/value with weights of their own: those maps are kept")
        shape = (attention_tokens(_shape(query), module), attention_tokens(_shape(key), module))
        outputs = self._attention_record(node, name, module, adapter, inputs, shape, layouts)
        self._attention_heads(node, name, module, shape)
        return [self._store(outputs, rank - 1)] + [None] * (len(pieces) - 1)

    def _attention_record(self, node: fx.Node, name: str, module: nn.Module, adapter: LayerAdapter,
                          inputs: Labels, shape: tuple[int, int], layouts: list) -> Labels:
        """The record of the attention layer's embedding (in: query positions, out: out_proj's)."""
        record = self.records.get(name)
        if record is None:
            record = self.records[name] = LayerRecord(name, module, adapter)
        record.nodes.append(node)
        record.output_shapes.append(shape)
        record.axis = layouts[0][1]
        self._read_residues(record, np.concatenate([lay[0] for lay in layouts]))
        outputs = adapter.output_labels(module, inputs, self, name)
        if record.inputs is None:
            record.inputs, record.outputs = inputs, outputs
        else:   # the same layer called again: both calls see the same maps
            self.union.union(record.inputs, inputs)
            self.union.union(record.outputs, outputs)
        return record.outputs

    def _attention_heads(self, node: fx.Node, name: str, module: nn.Module, shape: tuple[int, int]) -> None:
        """The heads as maps of their own record (same module, an ``inner`` adapter; the group is
        named after the module):
        kept when the adapter cannot cut them, when the attention weights are used (their average
        over heads changes with any head) or when a mask holds one (L, S) per head."""
        key = f"{name}#heads"
        heads = self.fresh(module.num_heads)
        record = self.records.get(key)
        if record is None:
            # named apart from the layer (positions() keys, masks): ``name:heads``, no module's name
            record = self.records[key] = LayerRecord(f"{name}:heads", module, AttentionHeadsAdapter(), outputs=heads)
        else:
            self.union.union(record.outputs, heads)
        record.output_shapes.append(shape)
        mask = node.kwargs.get("attn_mask", node.args[5] if len(node.args) > 5 else None)
        reasons = [
            (not MultiheadAttentionAdapter.supported(module), "its q, k, v weights are not one in_proj"),
            (_weights_used(node), "its attention weights (an average over heads) are used"),
            (len(_shape(mask) or ()) == 3, "its attn_mask holds one mask per head")]
        for bad, why in reasons:
            if bad:
                self.pin(heads, f"the heads of attention {name!r} are kept: {why}")

    def _expand(self, node: fx.Node) -> Labels | Moved | None:
        """expand / expand_as: size-1 axes broadcast (a class token over the batch); the channel
        axes keep their size, and move right by the axes put in front."""
        source = node.args[0]
        layout, in_shape, out_shape = self._layout(source), _shape(source), _shape(node)
        if layout is None or in_shape is None or out_shape is None:
            return None
        labels, axis = layout
        at = axis + len(out_shape) - len(in_shape)
        if out_shape[at:at + labels.ndim] != labels.shape:
            raise self._unsupported(node, "it broadcasts the channel axis")
        return self._store(labels, at)

    def _read_residues(self, record: LayerRecord, inputs: Labels) -> None:
        """A layer making new maps from positions that are not zero once removed: a constant is
        folded into its bias on removal (``record.residue``) when the adapter does that exactly
        and the layer is called once; anything else (data, a second call) keeps those maps."""
        states = self._states(inputs)
        foldable = (states == CONST) & record.adapter.folds_constants(record.module) & (len(record.nodes) == 1)
        reason = (f"{record.name!r} reads maps that are not zero once removed (a bias or an op such as "
                  "sigmoid after them) and cannot fold them: they are kept")
        if record.residue is not None:   # called again: the folded constant would differ per call
            self.pin(record.inputs[record.residue], reason)
            record.residue = None
        self.pin(inputs[(states != ZERO) & ~foldable], reason)
        if foldable.any():
            record.residue = foldable

    # -- functions and methods
    def _call(self, node: fx.Node) -> Any:
        target = node.target
        if node.op == "call_function":
            if target in ops.PAD_FUNCTIONS:
                return self._pad(node)
            if ops.is_unary_function(target):
                return self._unary(node)
            if target in ops.PERMUTE_FUNCTIONS:
                return self._permute(node)
            if target in ops.BINARY_FUNCTIONS:
                return self._binary(node)
            if target in ops.CAT_FUNCTIONS:
                return self._cat(node)
            if target in ops.SPLIT_FUNCTIONS:
                return self._split(node)
            if target is ops.GETITEM:
                return self._getitem(node)
            if target in ops.FLATTEN_FUNCTIONS or target in ops.RESHAPE_FUNCTIONS:
                return self._reshape(node, static=target in ops.FLATTEN_FUNCTIONS)
            if target in ops.SQUEEZE_FUNCTIONS or target in ops.REDUCE_FUNCTIONS:
                return self._keeps_channel_axis(node)
        elif node.op == "call_method":
            if target in ops.UNARY_METHODS:
                return self._unary(node)
            if target in ops.PERMUTE_METHODS:
                return self._permute(node)
            if target in ops.BINARY_METHODS:
                return self._binary(node)
            if target in ops.SPLIT_METHODS:
                return self._split(node)
            if target in ops.RESHAPE_METHODS:
                return self._reshape(node, static=target == "flatten")
            if target in ops.SQUEEZE_METHODS or target in ops.REDUCE_METHODS:
                return self._keeps_channel_axis(node)
            if target in ops.EXPAND_METHODS:
                return self._expand(node)
        raise self._unsupported(node)

    def _unary(self, node: fx.Node) -> Labels | Moved | None:
        source = node.args[0] if node.args else node.kwargs.get("input")
        in_shape, out_shape = _shape(source), _shape(node)
        layout = self._layout(source)
        if layout is None:
            return None
        labels, axis = layout
        end = axis + labels.ndim
        if in_shape is not None and out_shape is not None and len(in_shape) >= 2:
            if len(out_shape) < end or out_shape[:end] != in_shape[:end]:
                raise self._unsupported(node, "it changes the channel axis")
        return self._store(self._through(node, labels), axis)

    def _pad(self, node: fx.Node) -> Labels | None:
        """Padding; on the channel axis (He et al.'s option A shortcut) the added channels are
        constants of the code, so they are kept, and so is every map an add couples with them."""
        source = node.args[0]
        in_shape, out_shape = _shape(source), _shape(node)
        labels = self._through(node, self._tensor_labels(source))
        if labels is None or in_shape is None or out_shape is None or out_shape[1] == in_shape[1]:
            return labels
        pad = _flat_ints(node.args[1] if len(node.args) > 1 else node.kwargs.get("pad", ()))
        at = 2 * (len(in_shape) - 2)   # pad lists (before, after) from the last axis backwards
        if len(pad) < at + 2:
            raise self._unsupported(node, "it changes the channel axis")
        reason = f"{node.name} pads channels with constants: the maps it adds are kept"
        before = self._pinned_fresh((1, pad[at]), reason) if pad[at] else np.zeros(0, dtype=np.int64)
        after = self._pinned_fresh((1, pad[at + 1]), reason) if pad[at + 1] else np.zeros(0, dtype=np.int64)
        return np.concatenate([before, labels, after])

    def _keeps_channel_axis(self, node: fx.Node) -> Labels | None:
        """squeeze/unsqueeze/mean/sum over spatial axes: fine while batch and channels stay put."""
        source = node.args[0] if node.args else node.kwargs.get("input")
        in_shape, out_shape = _shape(source), _shape(node)
        labels = self._tensor_labels(source)
        if labels is None or in_shape is None:
            return None
        axes = _flat_ints(node.args[1:2]) + _flat_ints(node.kwargs.get("dim", ()))
        rank = len(out_shape) if node.target in ("unsqueeze", torch.unsqueeze) else len(in_shape)
        spatial_axes = all(a % rank >= 2 for a in axes) and (axes or node.target not in ops.REDUCE_METHODS | ops.REDUCE_FUNCTIONS)
        if spatial_axes and out_shape is not None and len(out_shape) >= 2 and out_shape[:2] == in_shape[:2]:
            return labels
        if node.target in ops.REDUCE_METHODS | ops.REDUCE_FUNCTIONS:
            # a mean over channels changes when one goes: keep them
            return self._opaque(node, f"{node.name} reduces over the channel axis: the maps it reads are kept")
        raise self._unsupported(node, "it moves the channel axis")

    def _binary(self, node: fx.Node) -> Labels | Moved | None:
        """Elementwise arithmetic: operands carrying the output's channels (on the same axes) are
        the same maps, position by position; a tensor broadcast over the channels couples
        nothing; a per-channel tensor of the model (a learned scale) is cut with the maps."""
        out_shape = _shape(node)
        operands = [a for a in list(node.args[:2]) + [node.kwargs.get("other")] if a is not None]
        if out_shape is None or len(out_shape) < 2:
            return None
        rank = len(out_shape)
        axis, block = self._output_block(operands, out_shape)
        span = slice(axis, axis + len(block))
        coupled: list[Labels] = []
        states: list[np.ndarray] = []   # each operand's residue, per position or one for all
        for a in operands:
            shape = _shape(a)
            if shape is None:   # a python number (one computed at run time counts as data)
                states.append(np.int8(DATA if isinstance(a, fx.Node) else ZERO if a == 0 else CONST))
                continue
            aligned = (1,) * (rank - len(shape)) + tuple(shape)
            layout = self._layout(a)
            carries = layout is not None and layout[1] + rank - len(shape) == axis and layout[0].shape == block
            if layout is not None and not carries and layout[0].size > 1:
                # its channels land on other axes of the output: every output position reads them
                self.pin(layout[0].ravel(), f"{node.name} combines channels on different axes: those maps are kept")
            if all(n == 1 for n in aligned[span]):   # broadcast over the channel axis: no coupling
                states.append(np.int8(CONST if a.op == "get_attr" else DATA))
                continue
            parameter = self._parameter_labels(node, a, aligned, axis, block) if a.op == "get_attr" else None
            if parameter is not None:
                coupled.append(parameter)
                states.append(np.int8(CONST))
            elif carries:
                coupled.append(layout[0])
                states.append(self._states(layout[0]))
            else:   # e.g. a constant of a shape fmprune cannot cut: keep the maps it touches
                labels = self.fresh(int(np.prod(block))).reshape(block)
                self.pin(labels, f"maps combined with a tensor of shape {shape} at {node.name} are kept")
                coupled.append(labels)
                states.append(np.int8(CONST))
        if not coupled:
            return self._pinned_fresh(out_shape, f"{node.name} creates channels from constants: they are kept")
        for other in coupled[1:]:
            self.union.union(coupled[0], other)
        residue = _combined_residue(node.target, [np.asarray(st).ravel() if np.ndim(st) else st for st in states],
                                    coupled[0].size)
        return self._store(self._with_states(coupled[0], residue.reshape(block)), axis)

    def _output_block(self, operands: list[Any], out_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        """Where the channels of ``a op b`` lie: those of the first operand carrying them at full
        size (not broadcast), else axis 1."""
        rank = len(out_shape)
        for a in operands:
            layout, shape = self._layout(a), _shape(a)
            if layout is None or shape is None:
                continue
            labels, axis = layout
            axis += rank - len(shape)
            if out_shape[axis:axis + labels.ndim] == labels.shape and labels.size > 1:
                return axis, labels.shape
        return 1, (out_shape[1],)

    def _parameter_labels(self, node: fx.Node, attr: fx.Node, aligned: tuple[int, ...], axis: int,
                          block: tuple[int, ...]) -> Labels | None:
        """A tensor of the model whose axis lined up with the channels has one entry per channel
        (ConvNeXt's ``layer_scale``, (C, 1, 1); ViT's positional embedding, (1, tokens, C), and
        class token): a layer of its own (``ParameterAdapter``), cut with the maps it scales or
        shifts. None for channels over several axes, or a tensor fmprune cannot cut."""
        if len(block) != 1 or attr is None or aligned is None or aligned[axis] != block[0]:
            return None
        owner_name, _, field_name = str(attr.target).rpartition(".")
        try:
            owner, mirror = self.model.get_submodule(owner_name), self.gm.get_submodule(owner_name)
        except AttributeError:
            return None
        if not torch.is_tensor(getattr(owner, field_name, None)):
            return None
        dim = axis - (len(aligned) - len(_shape(attr) or ()))
        if dim < 0 or _shape(attr)[dim] != block[0]:
            return None
        record = self.records.get(str(attr.target))
        labels = self.fresh(block[0])
        if record is None:
            adapter = ParameterAdapter(field_name, dim, (mirror,))
            record = self.records[str(attr.target)] = LayerRecord(owner_name, owner, adapter, outputs=labels)
        else:   # used again: the same maps
            self.union.union(record.outputs, labels)
        record.nodes.append(node)
        record.output_shapes.append(tuple(aligned))
        return labels

    def _dim(self, node: fx.Node, position: int, default: int) -> int:
        """The ``dim`` argument, made non-negative with the rank of the tensor(s) involved (a cat's
        output has its inputs' rank, whether they come as a list or as one sequence node)."""
        dim = node.args[position] if len(node.args) > position else node.kwargs.get("dim", default)
        source = node.args[0] if node.args else None
        shape = _shape(source) or _shape(node)
        return dim % len(shape) if shape and isinstance(dim, int) else dim

    def _cat_parts(self, node: fx.Node) -> list[Labels | None]:
        """The labels of what a cat joins: a list of tensors, or one node holding a sequence
        (``torch.cat(x.split(8, 1), 1)``, ``torch.cat(x.chunk(4, 1)[1:], 1)``)."""
        tensors = node.args[0] if node.args else node.kwargs.get("tensors", [])
        if isinstance(tensors, fx.Node):
            parts = self._sequence_labels(tensors)
            if parts is None:
                raise self._unsupported(node, "it joins a sequence fmprune cannot follow")
            return parts
        return [self._tensor_labels(t) for t in tensors]

    def _cat(self, node: fx.Node) -> Labels | Moved | None:
        """Along the channel axis: the inputs' labels concatenated. Along another axis (a batch, a
        spatial or a token axis: ViT's class token before the patches) the same maps side by side:
        united position by position; a tensor of the model among them (the class token, expanded
        over the batch) is cut with them (``ParameterAdapter``)."""
        dim = self._dim(node, 1, 0)
        tensors = node.args[0] if node.args else node.kwargs.get("tensors", [])
        if isinstance(tensors, fx.Node):
            nodes: list[Any] = [None] * len(self._cat_parts(node))
            layouts = [_layout_of(p) for p in self._cat_parts(node)]
        else:
            nodes, layouts = list(tensors), [self._layout(t) for t in tensors]
        carriers = [lay for n, lay in zip(nodes, layouts) if lay is not None and _model_tensor(n) is None]
        if not carriers or any(lay is None and _model_tensor(n) is None for n, lay in zip(nodes, layouts)):
            raise self._unsupported(node, "one of its inputs has no channel axis")
        labels, axis = carriers[0]
        if axis <= dim < axis + labels.ndim:
            return self._cat_channels(node, nodes, layouts, dim, axis, labels.ndim)
        coupled, states = [], []
        for n, lay in zip(nodes, layouts):
            if lay is not None and lay[1] == axis and lay[0].shape == labels.shape:
                coupled.append(lay[0])
                states.append(self._states(lay[0]))
                continue
            parameter = self._parameter_labels(node, _model_tensor(n), _shape(n), axis, labels.shape) \
                if _model_tensor(n) is not None else None
            if parameter is None:
                raise self._unsupported(node, "it joins tensors whose channels lie on different axes")
            coupled.append(parameter)
            states.append(np.full(labels.shape, CONST, dtype=np.int8))
        for other in coupled[1:]:
            self.union.union(coupled[0], other)
        return self._store(self._with_states(coupled[0], np.max(states, axis=0)), axis)

    def _cat_channels(self, node: fx.Node, nodes: list[Any], layouts: list, dim: int, axis: int,
                      ndim: int) -> Labels | Moved:
        """A cat along the channel axis (1, or the last of channels-last tensors): the labels
        concatenated; a constant's own channels are kept."""
        if ndim != 1:
            raise self._unsupported(node, "it joins along one of several channel axes")
        parts = []
        for n, lay in zip(nodes, layouts):
            if lay is not None and lay[1] == axis and lay[0].ndim == 1:
                parts.append(lay[0])
            elif _model_tensor(n) is not None:
                parts.append(self._pinned_fresh((1, _shape(n)[dim]), f"maps concatenated with a constant at {node.name} are kept"))
            else:
                raise self._unsupported(node, "it joins tensors whose channels lie on different axes")
        return self._store(np.concatenate(parts), axis)

    def _split(self, node: fx.Node) -> list[Labels | Moved | None]:
        """split / chunk: along another axis every piece has all the channels; along the channel
        axis (1, or the last of a channels-last tensor: MaxViT's q, k, v) each piece its slice of
        the labels, at sizes that are constants of the code, so those maps are kept."""
        layout = self._layout(node.args[0])
        shapes = _piece_shapes(node) or []
        dim = self._dim(node, 2, 0)
        if layout is None:
            return [None] * len(shapes)
        labels, axis = layout
        if not axis <= dim < axis + labels.ndim:
            return [self._store(labels, axis)] * len(shapes)
        if labels.ndim != 1:
            raise self._unsupported(node, "it splits one of several axes holding the channels")
        # removing a map would move a boundary
        self.pin(labels, f"{node.name} splits channels at fixed sizes: the maps it splits are kept")
        out, start = [], 0
        for s in shapes:
            out.append(self._store(labels[start:start + s[dim]], axis))
            start += s[dim]
        return out

    def _getitem(self, node: fx.Node) -> Any:
        source, index = node.args
        value = self.labels.get(source) if isinstance(source, fx.Node) else None
        if isinstance(value, list):
            return self._pick(node, value, index)
        if value is None:   # a tensor without a channel axis (a scalar per example, a constant)
            return self._pinned_fresh(_shape(node) or (), f"{node.name} builds channels from a value without them: they are kept")
        index = index if isinstance(index, tuple) else (index,)
        if isinstance(value, Moved):
            return self._index_moved(node, value, index)
        if index and index[0] is Ellipsis:
            raise self._unsupported(node, "indexing from the last axis")
        if not index or not isinstance(index[0], slice) or index[0] != slice(None):
            raise self._unsupported(node, "indexing the batch axis")
        rest = index[1:]
        if not rest:
            return value
        if isinstance(rest[0], slice) and all(isinstance(i, (slice, type(Ellipsis))) for i in rest[1:]):
            cut = rest[0]
            if any(isinstance(v, fx.Node) for v in (cut.start, cut.stop, cut.step)):
                raise self._unsupported(node, "a channel slice computed at run time")
            if cut.start in (None, 0) and cut.step in (None, 1) and (cut.stop is None or cut.stop >= len(value)):
                return value   # all channels, however many remain
            self.pin(value, f"{node.name} slices channels at fixed positions: the maps it slices are kept")
            return value[cut]
        raise self._unsupported(node, "indexing the channel axis")

    def _index_moved(self, node: fx.Node, value: Moved, index: tuple) -> Labels | Moved:
        """Indexing a tensor whose channels lie off axis 1 (``x[:, 0]``: ViT's class token of
        (N, tokens, C)): the batch and channel axes taken whole; other axes picked by a constant
        integer (gone: the channels move left) or sliced by constants."""
        rank, at = len(_shape(node.args[0]) or ()), value.axis
        if any(i is Ellipsis or i is None for i in index) or len(index) > rank:
            raise self._unsupported(node, "indexing with ... or None next to channels off axis 1")
        for j, item in enumerate(index):
            whole = isinstance(item, slice) and item == slice(None)
            if (j == 0 or value.axis <= j < value.axis + value.labels.ndim) and not whole:
                raise self._unsupported(node, "indexing the batch or channel axis")
            constant = (isinstance(item, int) and not isinstance(item, bool)) or (isinstance(item, slice) and not any(
                isinstance(v, fx.Node) for v in (item.start, item.stop, item.step)))
            if not constant:
                raise self._unsupported(node, "an index computed at run time")
            if isinstance(item, int) and j < value.axis:
                at -= 1
        return self._store(value.labels, at)

    def _pick(self, node: fx.Node, pieces: list[Labels | None], index: Any) -> Any:
        """An item or a slice of a sequence of tensors (``x.chunk(4, 1)[1:]``, ``[::-1]``): the
        labels of the pieces picked, in that order; an index computed at run time is refused."""
        parts = (index.start, index.stop, index.step) if isinstance(index, slice) else (index,)
        if not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts):
            raise self._unsupported(node, "an index computed at run time")
        return pieces[index]

    def _permute(self, node: fx.Node) -> Labels | Moved | None:
        """permute / transpose: the labels go where their axes go (NCHW -> NHWC puts them on axis
        3, and back); the batch axis must stay first and the channel axes together."""
        source = node.args[0] if node.args else node.kwargs.get("input")
        layout, shape = self._layout(source), _shape(source)
        if layout is None or shape is None:
            return None
        labels, axis = layout
        order = self._permutation(node, len(shape))
        if order[0] != 0:
            raise self._unsupported(node, "it moves the batch axis")
        where = [j for j, i in enumerate(order) if axis <= i < axis + labels.ndim]
        if where != list(range(where[0], where[0] + len(where))):
            raise self._unsupported(node, "it separates the axes holding the channels")
        return self._store(labels.transpose([order[j] - axis for j in where]), where[0])

    def _permutation(self, node: fx.Node, rank: int) -> list[int]:
        """Output axis j is input axis ``order[j]``."""
        if node.target in ("permute", torch.permute):
            dims = list(node.args[1:]) or [node.kwargs.get("dims")]
            if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
                dims = list(dims[0])
        else:   # transpose / swapaxes of two axes
            dims = list(node.args[1:3]) or [node.kwargs.get(k) for k in ("dim0", "dim1")]
        if len(dims) not in (2, rank) or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
            raise self._unsupported(node, "axes computed at run time")
        dims = [d % rank for d in dims]
        if node.target in ("permute", torch.permute):
            return dims
        order = list(range(rank))
        order[dims[0]], order[dims[1]] = order[dims[1]], order[dims[0]]
        return order

    def _reshape(self, node: fx.Node, static: bool) -> Labels | Moved | None:
        """view / reshape / flatten. Axes before and after the changed ones keep their meaning
        (C-order); the channels may be left alone, flattened with spatial axes into features
        (each map owns H·W consecutive features), or split/merged among themselves (ShuffleNet's
        (B, C) -> (B, g, C/g) and back). A channel size written as a constant would break once
        maps go: those maps are kept."""
        source = node.args[0]
        in_shape, out_shape = _shape(source), _shape(node)
        layout = self._layout(source)
        if layout is None or in_shape is None or out_shape is None:
            return None
        labels, axis = layout
        end = axis + labels.ndim
        sizes = [None] * len(out_shape) if static else _size_args(node, len(out_shape))
        p, q = _common_ends(in_shape, out_shape)
        if p == 0:
            raise self._unsupported(node, "it reshapes the batch axis")
        if end <= p or axis >= len(in_shape) - q:   # the channel axes are not touched
            at = axis if end <= p else axis + len(out_shape) - len(in_shape)
            self._pin_fixed(node, labels, [sizes[j] for j in range(at, at + labels.ndim)])
            return self._store(labels, at)
        region_in, region_out = (p, len(in_shape) - q), (p, len(out_shape) - q)
        if not (p <= axis and end <= region_in[1]):
            raise self._unsupported(node, f"it reshapes {in_shape} to {out_shape} across the channel axes")
        if region_in == (axis, end):   # the channel axes alone, split or merged
            out = labels.reshape(out_shape[region_out[0]:region_out[1]])
            self._tie_along_free_axis(node, out, sizes[region_out[0]:region_out[1]])
            return self._store(out, p)
        if region_out[1] - region_out[0] == 1:   # flattened with other axes: each position, C-order
            spread = labels.reshape((1,) * (axis - p) + labels.shape + (1,) * (region_in[1] - end))
            out = np.broadcast_to(spread, in_shape[p:region_in[1]]).reshape(-1)
            self._pin_fixed(node, labels, sizes[p:p + 1])
            return self._store(out, p)
        raise self._unsupported(node, f"it reshapes {in_shape} to {out_shape} across the channel axes")

    def _pin_fixed(self, node: fx.Node, labels: Labels, sizes: list[int | None]) -> None:
        """Keep the maps of channel axes whose size is written as a constant (> 1) in the code."""
        fixed = [n for n in sizes if n is not None and n > 1]
        if fixed:
            self.pin(labels.ravel(), f"{node.name} reshapes to a constant size {fixed[0]}: the maps it reshapes are kept")

    def _tie_along_free_axis(self, node: fx.Node, labels: Labels, sizes: list[int | None]) -> None:
        """After a view splitting or merging the channel axes, the axes whose size is a constant
        of the code keep it once maps go; exactly one axis may shrink, so what is removed must be
        whole slices across it: positions with the same index on it become one map. With no
        axis free, or several (which one shrinks is up to the code), the maps are kept."""
        free = [j for j, n in enumerate(sizes) if n is None]
        if labels.ndim == 1:
            self._pin_fixed(node, labels, sizes)
            return
        if len(free) != 1:
            self.pin(labels.ravel(), f"{node.name} splits channels into {labels.shape} at sizes fmprune cannot "
                                     "tell apart (one size must follow the channel count): those maps are kept")
            return
        for piece in np.moveaxis(labels, free[0], 0):
            flat = piece.ravel()
            self.union.union(np.full(len(flat) - 1, flat[0]), flat[1:])

    # -- errors and ignores
    def _ignored(self, node: fx.Node) -> bool:
        if not self.ignore:
            return False
        names = {node.name}
        if node.op == "call_module":
            names.add(str(node.target))
        names.update(str(k) for k in (node.meta.get("nn_module_stack") or {}))
        return any(n == i or n.startswith(i + ".") for n in names for i in self.ignore)

    def _describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"module {node.target!r} ({type(self.modules[node.target]).__name__})"
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        kind = "method" if node.op == "call_method" else "function"
        return f"{kind} {target!r} at node {node.name!r}"

    def _unsupported(self, node: fx.Node, why: str = "") -> UnsupportedModelError:
        what = self._describe(node)
        reason = f" ({why})" if why else ""
        if node.op == "call_module":
            advice = (f"register an adapter with fmprune.register_layer({type(self.modules[node.target]).__name__}, ...) "
                      f"or exclude it with ignore=[{str(node.target)!r}]")
        else:
            advice = f"exclude it with ignore=[{node.name!r}] (its maps are then kept)"
        return UnsupportedModelError(f"cannot prune through {what}{reason}: {advice}")


def _layout_of(value: Any) -> tuple[np.ndarray, int] | None:
    """(labels, first axis they cover) of a value of the label flow: a plain array lies on axis 1."""
    if isinstance(value, np.ndarray):
        return value, 1
    if isinstance(value, Moved):
        return value.labels, value.axis
    return None


def _combined_residue(target: Any, states: list[np.ndarray], channels: int) -> np.ndarray:
    """What ``a op b`` holds once the coupled maps are removed, from what each operand holds:
    a product with a zero is zero, a quotient is zero when its numerator is (and data when its
    denominator is: 0/0), a sum or a max is zero only when every term is."""
    each = np.stack([np.broadcast_to(s, (channels,)) for s in states])
    most = each.max(axis=0)
    if target in ops.PRODUCTS:
        return np.where((each == ZERO).any(axis=0), ZERO, most).astype(np.int8)
    if target in ops.QUOTIENTS:
        numerator_zero = each[0] == ZERO
        denominator_zero = (each[1:] == ZERO).any(axis=0)
        return np.where(denominator_zero, DATA, np.where(numerator_zero, ZERO, most)).astype(np.int8)
    return most.astype(np.int8)


def _feature_node(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """The node whose output is the layer's feature map: follow the only user while it is a
    channel-wise layer (BatchNorm) or an activation; stop at pooling, adds, or branching."""
    current = node
    while len(current.users) == 1:
        user = next(iter(current.users))
        if not user.args or user.args[0] is not current:
            break
        if user.op == "call_module":
            module = modules[user.target]
            adapter = adapter_for(module)
            if not ((adapter is not None and adapter.channelwise) or ops.is_activation_module(module)):
                break
        elif not ((user.op == "call_function" and user.target in ops.ACTIVATION_FUNCTIONS)
                  or (user.op == "call_method" and user.target in ops.ACTIVATION_METHODS)):
            break
        current = user
    return current


def _tensor_output(node: fx.Node) -> fx.Node:
    """The node holding a layer's output tensor: its first item when it returns several
    (attention's (output, weights)), else the node."""
    if isinstance(node.meta.get("tensor_meta"), (tuple, list)):
        for user in node.users:
            if user.op == "call_function" and user.target is ops.GETITEM and user.args[1] == 0:
                return user
    return node


def _weights_used(node: fx.Node) -> bool:
    """Whether anything reads an attention call's second output (the weights), or the pair whole."""
    return any(not (u.op == "call_function" and u.target is ops.GETITEM and u.args[1] == 0) and
               (len(u.users) > 0 or u.target is not ops.GETITEM) for u in node.users)


def attention_tokens(shape: tuple[int, ...] | None, module: nn.Module) -> int:
    """The sequence length of an attention input: (N, L, E) batch first, else (L, N, E); (L, E) unbatched."""
    if not shape:
        return 1
    return shape[1] if len(shape) == 3 and getattr(module, "batch_first", False) else shape[0]


def _model_tensor(node: Any) -> fx.Node | None:
    """The ``get_attr`` node a tensor comes from through broadcasts alone (a class token
    expanded over the batch), else None."""
    while isinstance(node, fx.Node) and node.op == "call_method" and node.target in ops.EXPAND_METHODS:
        node = node.args[0]
    return node if isinstance(node, fx.Node) and node.op == "get_attr" else None


def _flat_nodes(value: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(value, out.append)
    return out


def _size_args(node: fx.Node, rank: int) -> list[int | None]:
    """The size a view/reshape asks for on each output axis: an int written in the code, or None
    (computed at run time, or -1)."""
    args = list(node.args[1:]) or [node.kwargs.get("shape", node.kwargs.get("size"))]
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = list(args[0])
    if len(args) != rank:
        return [None] * rank
    return [a if isinstance(a, int) and not isinstance(a, bool) and a >= 0 else None for a in args]


def _common_ends(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int]:
    """Lengths of the common prefix and (not overlapping it) suffix of two shapes of one size:
    the axes a C-order view leaves as they are."""
    n = min(len(a), len(b))
    p = 0
    while p < n and a[p] == b[p]:
        p += 1
    q = 0
    while q < n - p and a[-1 - q] == b[-1 - q]:
        q += 1
    # axes of size 1 make the split ambiguous ((1, 1, 1, 3) -> (1, 3) is a flatten, not three
    # axes vanishing): the axes that change on one side must become at least one on the other
    while q > 0 and (len(a) - p - q == 0) != (len(b) - p - q == 0):
        q -= 1
    return p, q


def _flat_ints(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flat_ints(item)]
    return []


def trace_labels(model: nn.Module, example_inputs: Any, ignore: Sequence[str] = ()) -> TraceResult:
    """Trace ``model`` and run the label flow; raises UnsupportedModelError before changing anything."""
    examples = _as_tuple(example_inputs)
    gm, notes = capture(model, examples)
    _check_ignore(gm, ignore)
    propagate_shapes(gm, model, examples)
    result = LabelFlow(gm, ignore, model).run()
    result.notes[:0] = notes
    return result


def _check_ignore(gm: fx.GraphModule, ignore: Sequence[str]) -> None:
    """Every name to ignore is a module or a node of the traced graph: a misspelt name would
    otherwise be accepted and ignore nothing."""
    known = {name for name, _ in gm.named_modules()} | {node.name for node in gm.graph.nodes}
    unknown = [name for name in ignore if name not in known]
    if unknown:
        nodes = [n.name for n in gm.graph.nodes if n.op in ("call_function", "call_method")]
        raise PruningError(f"ignore: no module or graph node named {unknown[0]!r} (modules are named as in "
                           f"model.named_modules(); function nodes here: {', '.join(nodes[:8]) or 'none'}"
                           f"{', ...' if len(nodes) > 8 else ''})")
