"""From a model to the fx graph the label flow reads: torch.fx's symbolic trace, else a graph
recorded from one forward pass on the example inputs.

torch.fx cannot follow Python control flow on a traced value (``if x.shape[-1] % 2: ...``,
``int(math.sqrt(x.size(1)))``). The recording tracer is the same fx tracer whose every node
also computes its real value as it is created, so that when the model's Python code needs a
number or a truth value it gets the real one, and the branch the example takes is the one
recorded. The graph has the same kinds of nodes (leaf modules, functions, methods) as a symbolic
trace, so the label flow, its groups and its refusals are the same.

A recorded graph holds for inputs like the example only, so a branch is accepted only where the
answer cannot change for the data fmprune feeds it, nor with the pruning it plans:

* a decision reading tensor *values* (``if x.sum() > 0``) is refused: another input could go
  the other way;
* a decision reading a tensor's *shape* is recorded on that tensor (``node.meta[DECIDES]``):
  the label flow keeps the maps of an axis whose size decides (removing one would change the
  answer); spatial and token axes are the data's and stay put;
* the recorded graph must reproduce the model on a batch of another size, else it read the
  batch size in Python (the engine replays the graph on batches of every size).

torch.export was the other candidate: it flattens every module into aten operators, so the
label flow (which reads module calls through their adapters) could not read its graph, and it
refuses branches on values just as this does.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Iterator

import torch
from torch import fx, nn

from ..errors import UnsupportedModelError, first_line
from ..layers import is_registered
from ..modes import eval_mode

DECIDES = "fmprune_decides"   # node.meta key: [(axis or None for all, what)] read by Python decisions

# shape reads: an attribute or method giving the size of one axis or all; the rank never changes
_SHAPE_ATTRS, _STABLE_ATTRS = {"shape"}, {"ndim", "dtype", "device", "is_cuda", "layout", "requires_grad"}
_SHAPE_METHODS, _STABLE_METHODS = {"size", "numel"}, {"dim", "ndimension", "get_device", "is_floating_point",
                                                      "is_contiguous", "type"}


class LeafTracer(fx.Tracer):
    """fx tracer that keeps registered custom layers as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_registered(m) or super().is_leaf_module(m, qualname)


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """The fx graph of ``model`` as it runs in eval mode: Python reads of ``self.training`` (e.g.
    ``F.dropout(x, p, self.training)``) are frozen at trace time, and the graph is what evaluation
    and scoring replay, so they must see inference behaviour whatever mode the model is in now."""
    with eval_mode(model):
        graph = LeafTracer().trace(model)
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


class _ValueRead(Exception):
    """A Python decision read tensor values: the recording would hold for this input only."""


class _Concrete(fx.Proxy):
    """A proxy whose real value the recording tracer knows: Python numbers and lengths taken
    from it are the real ones (each one checked as a decision, see ``RecordingTracer.concrete``)."""

    def __getattr__(self, k: str) -> "_ConcreteAttribute":
        return _ConcreteAttribute(self, k)

    def __len__(self) -> int:
        return len(self.tracer.concrete(self, "len()"))

    def __int__(self) -> int:
        return int(self.tracer.concrete(self, "int()"))

    def __float__(self) -> float:
        return float(self.tracer.concrete(self, "float()"))

    def __index__(self) -> int:
        return operator.index(self.tracer.concrete(self, "an index"))


class _ConcreteAttribute(fx.proxy.Attribute, _Concrete):
    """``x.shape`` and friends, concrete too (``len(x.shape)``)."""


class RecordingTracer(LeafTracer):
    """Traces like torch.fx and runs every node on real values as it records it."""

    def __init__(self, examples: tuple) -> None:
        super().__init__()
        self.values: dict[fx.Node, Any] = {}
        self._examples = list(examples)
        self._placeholders = 0
        self._running = False   # computing a value: module calls and parameters are the real ones

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Concrete(node, self)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        running, self._running = self._running, True
        try:
            self.values[node] = self._run(node)
        finally:
            self._running = running
        return node

    # while tracing, fx routes every module call and parameter read through these two
    def call_module(self, m: nn.Module, forward, args, kwargs) -> Any:
        return forward(*args, **kwargs) if self._running else super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        return attr_val if self._running else super().getattr(attr, attr_val, parameter_proxy_cache)

    def _run(self, node: fx.Node) -> Any:
        """The node's real value from its inputs' (a placeholder's: the next example)."""
        if node.op == "placeholder":
            i, self._placeholders = self._placeholders, self._placeholders + 1
            if i < len(self._examples):
                return self._examples[i]
            if node.args:
                return node.args[0]   # the parameter's default
            raise TypeError(f"forward takes more inputs than the {len(self._examples)} example(s) given")
        if node.op == "get_attr":
            value: Any = self.root
            for part in str(node.target).split("."):
                value = getattr(value, part)
            return value
        if node.op == "output":
            return None
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), self.values.__getitem__)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return self.root.get_submodule(node.target)(*args, **kwargs)

    # -- Python asking for a real value
    def to_bool(self, obj: fx.Proxy) -> bool:
        return bool(self.concrete(obj, "a Python branch"))

    def iter(self, obj: fx.Proxy) -> Iterator:
        value = self.concrete(obj, "a Python loop")
        return iter([obj[i] for i in range(len(value))])

    def concrete(self, proxy: fx.Proxy, use: str) -> Any:
        """The real value of ``proxy`` for ``use``: refused if it reads tensor values; the
        tensors whose shapes it reads are marked (``DECIDES``)."""
        node = proxy.node
        for tensor, axis in self._reads(node, use):
            tensor.meta.setdefault(DECIDES, []).append((axis, f"{use} at node {node.name!r} reads the size of {tensor.name!r}"))
        return self.values[node]

    def _reads(self, node: fx.Node, use: str) -> list[tuple[fx.Node, int | None]]:
        """(tensor node, axis or None: all) of every shape read that ``node``'s value comes from."""
        out: list[tuple[fx.Node, int | None]] = []
        seen: set[fx.Node] = set()
        todo = [node]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            read = self._shape_read(n)
            if read is not None:
                out.extend(read)
                continue
            if torch.is_tensor(self.values.get(n)):
                raise _ValueRead(f"{use} at node {node.name!r} reads the values of tensor {n.name!r}: another "
                                 "input could go another way")
            todo.extend(n.all_input_nodes)
        return out

    def _shape_read(self, n: fx.Node) -> list[tuple[fx.Node, int | None]] | None:
        """What ``n`` reads of a tensor's shape, [] for nothing that changes (the rank, the
        dtype), None when ``n`` is no shape read."""
        if n.op == "call_function" and n.target is operator.getitem and isinstance(n.args[1], int) \
                and isinstance(n.args[0], fx.Node) and self._whole_shape(n.args[0]) is not None:
            return [(self._whole_shape(n.args[0]), n.args[1])]
        tensor = self._whole_shape(n)
        if tensor is not None:
            return [(tensor, None)]
        if n.op == "call_method" and n.target in _SHAPE_METHODS and n.args:
            dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
            return [(n.args[0], dim if isinstance(dim, int) else None)]
        if (n.op == "call_method" and n.target in _STABLE_METHODS) or (
                n.op == "call_function" and n.target is getattr and n.args[1] in _STABLE_ATTRS):
            return []
        return None

    @staticmethod
    def _whole_shape(n: fx.Node) -> fx.Node | None:
        """The tensor whose whole shape ``n`` is (``x.shape``, ``x.size()``), else None."""
        if n.op == "call_function" and n.target is getattr and n.args[1] in _SHAPE_ATTRS:
            return n.args[0]
        if n.op == "call_method" and n.target == "size" and len(n.args) == 1 and "dim" not in n.kwargs:
            return n.args[0]
        return None


def record_forward(model: nn.Module, examples: tuple) -> fx.GraphModule:
    """The graph of one eval-mode forward of ``model`` on ``examples``, the branches it took
    (refused where they read tensor values or the batch size: see the module doc)."""
    tracer = RecordingTracer(examples)
    with eval_mode(model), torch.no_grad():
        graph = tracer.trace(model)
    gm = fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)
    _check_batch_free(model, gm, examples)
    return gm


def _check_batch_free(model: nn.Module, gm: fx.GraphModule, examples: tuple) -> None:
    """The recorded graph gives the model's output on the examples repeated (another batch
    size): a graph that read the batch size in Python would not."""
    if not examples or not all(torch.is_tensor(x) and x.dim() > 0 for x in examples):
        return
    doubled = tuple(torch.cat([x, x]) for x in examples)
    with eval_mode(model), torch.no_grad():
        try:
            expected = model(*doubled)
        except Exception:   # noqa: BLE001 - inputs that are not batched: nothing to compare
            return
        try:
            got = gm(*doubled)
        except Exception as e:  # noqa: BLE001
            raise _ValueRead(f"the graph fails on a batch of {len(doubled[0])} ({type(e).__name__}): "
                             "it read the batch size in Python") from None
    if not _same(expected, got):
        raise _ValueRead(f"the graph differs from the model on a batch of {len(doubled[0])}: it read the "
                         "batch size in Python")


def _same(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.allclose(
            a, b, rtol=1e-5, atol=1e-6 * max(1.0, float(a.abs().max()) if a.numel() else 1.0))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b if not (isinstance(a, float) and math.isnan(a)) else isinstance(b, float) and math.isnan(b)


def _first_line(e: BaseException) -> str:
    line = first_line(e)
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def capture(model: nn.Module, examples: tuple) -> tuple[fx.GraphModule, list[str]]:
    """The model's graph and notes: torch.fx's symbolic trace, else the recording of one forward
    pass (with a note saying so); neither: one line naming both failures."""
    try:
        return symbolic_trace(model), []
    except Exception as e:   # noqa: BLE001 - any tracing failure is the user's model's property
        fx_failure = _first_line(e)
    try:
        gm = record_forward(model, examples)
    except Exception as e:   # noqa: BLE001
        why = str(e) if isinstance(e, _ValueRead) else _first_line(e)
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__}: torch.fx failed ({fx_failure}), and so did recording one "
            f"forward pass ({why}); make the branch static, or wrap the part in a module and register it "
            "with fmprune.register_layer") from None
    note = (f"traced by recording one forward pass on the example inputs (torch.fx failed: {fx_failure}): "
            "Python branches on shapes were recorded as the example took them")
    return gm, [note]

