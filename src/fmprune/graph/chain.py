"""Trace a model (torch.fx) into a chain of stages so that pruning knows, for every map, which
module produces it and which consumes it.

A *stage* is one Conv2d or Linear plus what follows it up to the next one:
``z = layer(x)`` (pre-activation), ``a = activation(z)`` (BatchNorm, ReLU: the *feature map*
that criteria look at), ``p = reduce(a)`` (pooling, dropout, flatten: the consumer's input).
Every stage but the last (the classifier) is prunable. Only plain chains are supported today;
anything else is refused with an error that names the operation.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import PruningError, TopologyError

_LAYER_TYPES = (nn.Conv2d, nn.Linear)
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
_ACTIVATION_MODULES = (nn.ReLU,)
# Map-wise ops after the activation. They are positively homogeneous and act per channel, so
# sum_pos(dC/da * a) over a map equals sum_pos(dC/dp * p) over the same map after them.
_REDUCE_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Identity)
_RELU_FUNCTIONS = {F.relu, torch.relu}
_FLATTEN_FUNCTIONS = {torch.flatten}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}


@dataclass
class Stage:
    """One producing layer and the ops up to the next layer (eval-mode semantics)."""

    name: str
    module: nn.Module
    flatten_input: bool = False
    norms: list[str] = field(default_factory=list)
    activation: list[Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=list)
    reduce: list[Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=list)
    out_spatial: tuple[int, ...] = ()   # H, W of z (empty for Linear)
    in_spatial: tuple[int, ...] = ()    # H, W of the input before flattening

    @property
    def n_maps(self) -> int:
        m = self.module
        return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features

    @property
    def map_numel(self) -> int:
        """Elements per feature map (M in the Taylor criterion's mean over the map)."""
        n = 1
        for s in self.out_spatial:
            n *= s
        return n

    @property
    def flatten_factor(self) -> int:
        """Inputs of this layer per input map: H·W after a flatten, else 1."""
        n = 1
        if self.flatten_input:
            for d in self.in_spatial:
                n *= d
        return n

    def layer(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.flatten(1) if self.flatten_input else x)

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        for op in self.activation:
            z = op(z)
        return z

    def reduce_maps(self, a: torch.Tensor) -> torch.Tensor:
        for op in self.reduce:
            a = op(a)
        return a


@dataclass
class PrunableLayer:
    """A layer whose output maps can be removed, and who pays for each map."""

    name: str
    index: int
    consumer: str
    flatten_factor: int      # consumer inputs per map: 1 for conv→conv, H·W for conv→flatten→fc
    n_maps: int


class Topology:
    """The traced chain of a model. Surgery resizes modules in place, so it stays valid."""

    def __init__(self, model: nn.Module, stages: list[Stage]) -> None:
        self.model = model
        self.stages = stages

    @property
    def layer_names(self) -> list[str]:
        return [s.name for s in self.stages]

    @property
    def prunable_names(self) -> list[str]:
        return [s.name for s in self.stages[:-1]]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise PruningError(f"unknown layer {name!r} (prunable layers: {', '.join(self.prunable_names)})")

    def index(self, name: str) -> int:
        return self.stages.index(self.stage(name))

    def prunable(self, name: str) -> PrunableLayer:
        i = self.index(name)
        if i == len(self.stages) - 1:
            raise PruningError(f"layer {name!r} is the classifier and cannot be pruned")
        c = self.stages[i + 1]
        return PrunableLayer(name=name, index=i, consumer=c.name, flatten_factor=c.flatten_factor,
                             n_maps=self.stages[i].n_maps)

    def scope(self, scope: str) -> list[str]:
        """Layer names inside a scope: ``all`` (every layer but the classifier) or a layer name."""
        if scope == "all":
            return self.prunable_names
        self.prunable(scope)  # raises a clear error for unknown names or the classifier
        return [scope]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode forward through the chain (equals ``model.eval()(x)``)."""
        for s in self.stages:
            x = s.reduce_maps(s.activate(s.layer(x)))
        return x

    def map_counts(self) -> dict[str, int]:
        return {s.name: s.n_maps for s in self.stages}

    def macs_per_map(self, counts: dict[str, int] | None = None) -> dict[str, int]:
        """MACs per example that one map of each prunable layer costs: its own filter plus its
        slice of the consumer. ``counts`` (maps alive per layer) defaults to the modules' sizes, so
        a masked dense model gets the same figures as the physically pruned one."""
        counts = counts or self.map_counts()
        out = {}
        for i, s in enumerate(self.stages[:-1]):
            c = self.stages[i + 1]
            in_maps = counts[self.stages[i - 1].name] if i else _in_maps(s)
            out[s.name] = (_macs(s, in_maps * s.flatten_factor, 1)
                           + _macs(c, c.flatten_factor, counts[c.name]))
        return out


def _in_maps(stage: Stage) -> int:
    m = stage.module
    return m.in_channels if isinstance(m, nn.Conv2d) else m.in_features // stage.flatten_factor


def _macs(stage: Stage, inputs: int, outputs: int) -> int:
    """MACs of ``stage``'s layer with ``inputs`` input channels/features and ``outputs`` maps."""
    m = stage.module
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return stage.map_numel * outputs * (inputs // m.groups) * kh * kw
    return inputs * outputs


def stage_macs(stage: Stage) -> int:
    """Multiply-accumulates of the stage's layer for one example."""
    m = stage.module
    inputs = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
    return _macs(stage, inputs, stage.n_maps)


def trace(model: nn.Module, input_shape: tuple[int, ...]) -> Topology:
    """Trace ``model`` into a :class:`Topology`; raise :class:`TopologyError` naming any op that
    does not fit a plain chain of Conv2d/Linear with ReLU, BatchNorm, pooling, dropout, flatten."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as e:
        raise TopologyError(f"cannot trace {type(model).__name__} with torch.fx: {e}") from None
    modules = dict(model.named_modules())
    stages: list[Stage] = []
    pending_flatten = False
    previous: fx.Node | None = None
    for node in graph.nodes:
        if node.op == "placeholder":
            previous = node
            continue
        if node.op == "output":
            break
        if node.op == "get_attr" or not node.args or node.args[0] is not previous:
            raise TopologyError(f"unsupported operation {_describe(node, modules)}: only plain "
                                "chains of layers are supported (no branches or residuals)")
        if len(previous.users) != 1:
            raise TopologyError(f"unsupported branching at {previous.name}: its output is used "
                                f"{len(previous.users)} times")
        previous = node
        target = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(target, nn.Conv2d) and target.groups != 1:
            raise TopologyError(f"unsupported grouped convolution {node.target!r} (groups={target.groups})")
        if isinstance(target, _LAYER_TYPES):
            stages.append(Stage(node.target, target, flatten_input=pending_flatten))
            pending_flatten = False
        elif isinstance(target, nn.Flatten) or _is_flatten_call(node):
            pending_flatten = True
        elif not stages:
            raise TopologyError(f"unsupported operation {_describe(node, modules)} before the first layer")
        elif isinstance(target, _NORM_TYPES):
            stages[-1].norms.append(node.target)
            stages[-1].activation.append(target)
        elif isinstance(target, _ACTIVATION_MODULES) or _is_relu_call(node):
            stages[-1].activation.append(F.relu)
        elif isinstance(target, _REDUCE_MODULES):
            if not isinstance(target, (nn.Dropout, nn.Identity)):
                stages[-1].reduce.append(target)
        else:
            raise TopologyError(f"unsupported operation {_describe(node, modules)}")
    if len(stages) < 2:
        raise TopologyError(f"{type(model).__name__} has {len(stages)} Conv2d/Linear layers; "
                            "pruning needs at least one besides the classifier")
    topo = Topology(model, stages)
    _record_shapes(topo, input_shape)
    return topo


def _record_shapes(topo: Topology, input_shape: tuple[int, ...]) -> None:
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for s in topo.stages:
            s.in_spatial = tuple(x.shape[2:])
            z = s.layer(x)
            s.out_spatial = tuple(z.shape[2:])
            x = s.reduce_maps(s.activate(z))


def _is_relu_call(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _RELU_FUNCTIONS) or (
        node.op == "call_method" and node.target == "relu")


def _is_flatten_call(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _FLATTEN_FUNCTIONS:
        return True
    return node.op == "call_method" and node.target in _FLATTEN_METHODS


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target!r} ({type(modules[node.target]).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    if node.target is operator.add:
        target = "add"
    return f"{target!r} at node {node.name}"
