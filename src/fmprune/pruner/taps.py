"""Reading what criteria need from the user's own forward and backward passes.

The engine replays the traced graph on its own calibration split with a cross-entropy loss; a
user's loop has its own data and loss (segmentation, detection, several heads), so the
:class:`~fmprune.Pruner` reads the same quantities from the user's passes instead, with hooks:

* a forward hook on the module whose output is the value wanted (a producer's feature map after
  its norm and activation, the producer's own output, or its BatchNorm's output);
* a tensor hook on that output, which receives dLoss/da during ``loss.backward()`` and keeps
  Σ_positions dLoss/da · a per example and map (the Taylor product), nothing larger.

Where the wanted value is made by a function rather than a module (``F.relu(self.bn(x))``), the
hook sits on the last module before it. For ReLU-like functions (f(z) = f'(z)·z) the Taylor product
is the same at z as at f(z); the activations themselves are the functions replayed on z; any other
function is noted in :attr:`Taps.notes` and read before it.

Forwards without autograd (``torch.no_grad()`` evaluation) are not recorded, so evaluating inside
the loop never pollutes the statistics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import FmpruneError
from ..graph import Graph, Member
from ..graph.ops import INPLACE_FUNCTIONS, is_activation_module
from ..engine.engine_base import channels_first, grad_dot
from ..graph.chains import norm_node, producer_chain
from .passes import LossPasses

# f(z) = f'(z)·z: the Taylor product dL/df·f equals dL/dz·z, so it may be read before f
HOMOGENEOUS = {F.relu, torch.relu, F.leaky_relu, "relu", "relu_"}
WHERES = ("feature", "output", "norm")
MAX_PENDING = 16      # forwards kept per layer between two accumulate() calls


@dataclass
class Batch:
    """What one recorded forward (and its backward) left for one tap."""

    activation: torch.Tensor | None = None
    grad_dot: torch.Tensor | None = None


@dataclass
class Tap:
    """One hooked value: the output of ``module`` (then ``replay`` functions) for ``layer``."""

    layer: str
    where: str
    module_name: str
    replay: list[fx.Node]
    modules: dict[str, nn.Module]
    want_activation: bool
    want_grad: bool
    clone: bool                                   # the value is later changed in place
    axis: int = 1                                 # the channel axis (the last in channels-last blocks)
    pending: list[Batch] = field(default_factory=list)
    activations: list[torch.Tensor] = field(default_factory=list)
    grad_dots: list[torch.Tensor] = field(default_factory=list)
    activation_examples: int = 0

    def forward_hook(self, cap: int, auto: bool, recording: Callable[[], bool]) -> Callable:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not (recording() and torch.is_tensor(output) and torch.is_grad_enabled() and output.requires_grad):
                return
            if auto:     # the forwards whose backward has run are complete: commit them
                self.take_pending(keep_incomplete=True)
            value = output.detach()
            if self.clone:
                value = value.clone()
            batch = Batch()
            if self.want_activation and self.activation_examples < cap:
                batch.activation = channels_first(_replay(self.replay, value, self.modules), self.axis).float()
                self.activation_examples += len(value)
            if self.want_grad:
                output.register_hook(lambda grad: self._backward(batch, value, grad))
            self.pending.append(batch)
            del self.pending[:-MAX_PENDING]
        return hook

    def _backward(self, batch: Batch, value: torch.Tensor, grad: torch.Tensor) -> None:
        batch.grad_dot = grad_dot(grad.detach(), value, self.axis)

    def take_pending(self, keep_incomplete: bool = False) -> tuple[int, int, int]:
        """Move the completed forwards into the statistics: (forwards seen, kept, examples kept).
        Forwards still waiting for a backward are dropped, or kept waiting (``keep_incomplete``)."""
        seen = len(self.pending)
        kept = examples = 0
        waiting = []
        for batch in self.pending:
            if self.want_grad and batch.grad_dot is None:
                waiting.append(batch)   # a loss never backpropagated (or not to here), or not yet
                continue
            if batch.activation is not None:
                self.activations.append(batch.activation)
            if batch.grad_dot is not None:
                self.grad_dots.append(batch.grad_dot)
            kept += 1
            stored = batch.grad_dot if batch.grad_dot is not None else batch.activation
            examples += 0 if stored is None else len(stored)
        self.pending[:] = waiting if keep_incomplete else []
        return seen, kept, examples

    def clear(self) -> None:
        self.pending.clear()
        self.activations.clear()
        self.grad_dots.clear()
        self.activation_examples = 0


def _homogeneous(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], (nn.ReLU, nn.LeakyReLU, nn.Identity))
    return node.target in HOMOGENEOUS


def _replay(nodes: list[fx.Node], value: torch.Tensor, modules: dict[str, nn.Module]) -> torch.Tensor:
    """Apply the traced ops ``nodes`` (a chain of one-input norms and activations) to ``value``."""
    for node in nodes:
        args = (value, *node.args[1:])
        kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
        if node.op == "call_module":
            module = modules[node.target]
            inplace = getattr(module, "inplace", None)
            value = module(value.clone() if inplace else value)
        elif node.op == "call_method":
            name = node.target[:-1] if node.target.endswith("_") else node.target
            value = getattr(value, name)(*args[1:], **kwargs)
        else:
            value = INPLACE_FUNCTIONS.get(node.target, node.target)(*args, **kwargs)
    return value


def _changed_in_place(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether a later op overwrites ``node``'s value (``out += identity``, ``ReLU(inplace=True)``)."""
    for user in node.users:
        first = user.args[0] if user.args else None
        if first is not node:
            continue
        if user.op == "call_function" and (user.target in INPLACE_FUNCTIONS or user.kwargs.get("inplace")):
            return True
        if user.op == "call_method" and user.target.endswith("_") and not user.target.startswith("_"):
            return True
        if user.op == "call_module" and getattr(modules.get(user.target), "inplace", False) is True:
            return True
    return False


class Taps:
    """The hooks of one pruner: taps for every (producer, where) the criterion reads."""

    def __init__(self, graph: Graph, members: list[Member], wheres: set[str], want_activation: bool,
                 want_grad: bool, activation_examples: int, auto: bool = False) -> None:
        self.graph = graph
        self.modules = dict(graph.graph_module.named_modules())
        self.calls = Counter(n.target for n in graph.graph_module.graph.nodes if n.op == "call_module")
        self.taps: dict[tuple[str, str], Tap] = {}
        self.notes: list[str] = []
        self.recording = True       # False: forwards pass through the hooks untouched
        self.removed = False
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        model_modules = dict(graph.model.named_modules())
        for member in members:
            for where in sorted(wheres):
                tap = self._tap(member, where, want_activation and where == "feature", want_grad)
                if tap is not None:
                    self.taps[(member.name, where)] = tap
                    module = model_modules[tap.module_name]
                    self._handles.append(module.register_forward_hook(tap.forward_hook(activation_examples, auto, lambda: self.recording)))

    def _tap(self, member: Member, where: str, want_activation: bool, want_grad: bool) -> Tap | None:
        chain = producer_chain(member)
        target = {"feature": member.feature_node, "output": chain[0],
                  "norm": norm_node(member, self.modules)}[where]
        if target is None:
            return None
        upto = chain[:chain.index(target) + 1]
        # the last module called once in the whole graph: a shared module (one ReLU object used
        # after every conv) fires its hooks at every call, so the hook sits before it and it is
        # replayed like a function
        once = [i for i, n in enumerate(upto) if n.op == "call_module" and self.calls[n.target] == 1]
        replay = upto[once[-1] + 1:] if once else []
        if not once or any(n.op == "call_module" and not is_activation_module(self.modules[n.target])
                           for n in replay):
            self.notes.append(f"{member.name}: its layers are called more than once (shared weights): "
                              "not scored from data")
            return None
        hooked = once[-1]
        if want_grad and not all(_homogeneous(n, self.modules) for n in replay):
            self.notes.append(f"{member.name}: gradients read before {', '.join(map(_what, replay))} "
                              f"(a function, not a module: no hook can sit after it)")
        return Tap(member.name, where, str(upto[hooked].target), replay, self.modules, want_activation, want_grad,
                   _changed_in_place(upto[hooked], self.modules), member.axis)

    # -- what the pruner asks
    def accumulate(self) -> int:
        """Commit the forwards and backwards since the last call; returns the examples added."""
        if self.removed:
            raise FmpruneError("the pruner's hooks were removed (remove_hooks()); create a new Pruner")
        counts = {key: tap.take_pending() for key, tap in self.taps.items()}
        seen = {key for key, (s, _, _) in counts.items() if s}
        kept = {key for key, (_, k, _) in counts.items() if k}
        if seen and not kept and any(t.want_grad for t in self.taps.values()):
            raise FmpruneError("accumulate() found forward passes but no gradients: call it after loss.backward()")
        unreached = sorted({layer for (layer, where) in seen - kept})
        if unreached and kept:
            raise FmpruneError(f"loss.backward() did not reach layer(s) {', '.join(unreached)}: their maps cannot "
                               "be scored from gradients; leave them out with ignore=[...] or use a weight criterion")
        return max((n for _, _, n in counts.values()), default=0)

    def commit_completed(self) -> None:
        """Automatic mode: commit every forward whose backward has run."""
        for tap in self.taps.values():
            tap.take_pending(keep_incomplete=True)

    @property
    def examples(self) -> int:
        """Examples in the statistics (the most any tap holds)."""
        return max((sum(len(x) for x in (t.grad_dots or t.activations)) for t in self.taps.values()), default=0)

    def activation(self, layer: str) -> torch.Tensor:
        return self._stacked(layer, "feature", "activations")

    def grad_dot(self, layer: str, where: str) -> torch.Tensor:
        return self._stacked(layer, where, "grad_dots")

    def _stacked(self, layer: str, where: str, what: str) -> torch.Tensor:
        tap = self.taps.get((layer, where))
        if tap is None:
            raise FmpruneError(f"layer {layer!r}: nothing recorded at its {where} (no BatchNorm after it?)")
        parts = getattr(tap, what)
        if not parts:
            kind = "activations" if what == "activations" else "gradients"
            raise FmpruneError(f"layer {layer!r}: no {kind} recorded; run forward and loss.backward(), then "
                               "pruner.accumulate(), before scoring (a criterion reading activations "
                               "must declare it in its reads)")
        return torch.cat(parts)

    def set_stacked(self, layer: str, where: str, what: str, value: torch.Tensor) -> None:
        """Replace the statistics of one tap by ``value`` (all ranks' examples, gathered)."""
        setattr(self.taps[(layer, where)], what, [value])

    def clear(self) -> None:
        for tap in self.taps.values():
            tap.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()
        self.removed = True

    @property
    def active(self) -> bool:
        return not self.removed


def _what(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))


class TapProvider:
    """The criteria's :class:`~fmprune.criteria.CalibrationProvider` over recorded taps."""

    def __init__(self, taps: Taps, group_probe: Callable[[str, str], torch.Tensor | None],
                 passes: "LossPasses | None" = None) -> None:
        self.taps, self.group_probe, self.passes = taps, group_probe, passes

    def activation(self, layer: str) -> torch.Tensor:
        return self.taps.activation(layer)

    def grad_dot_activation(self, layer: str) -> torch.Tensor:
        return self.taps.grad_dot(layer, "feature")

    def probe(self, layer: str, quantity: str, **options) -> torch.Tensor:
        if quantity == "grad_dot_output":
            return self.taps.grad_dot(layer, "output")
        if quantity == "grad_dot_norm":
            return self.taps.grad_dot(layer, "norm")
        if self.passes is not None and quantity == "loss_change":
            return self.passes.loss_change(layer)
        if self.passes is not None and quantity == "hessian_diagonal":
            return self.passes.hessian_diagonal(layer, int(options.get("samples", 8)), options["generator"])
        found = self.group_probe(layer, quantity)
        if found is None:
            raise FmpruneError(f"{quantity!r} needs passes of its own over data: inside a training loop the "
                               "oracle and obd_hutchinson take Pruner(..., loss_fn=); obd (per-example Fisher) "
                               "and ThiNet run in `fmprune prune`")
        return found

