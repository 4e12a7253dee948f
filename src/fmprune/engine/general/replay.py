"""Replaying a traced graph: the interpreter every general-path computation runs on.

Scoring, evaluation, the oracle and the probes all run the model's fx graph node by node so they
can keep the values they need (feature maps, the inputs of consumers, the values at cuts) and
start from values kept earlier. Autograd needs the values it saved intact, so in-place ops run
out of place here, and the model runs in eval mode. This module imports nothing else of the
engine: everything that replays builds on it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

from torch import fx, nn

from ...graph.ops import INPLACE_FUNCTIONS
from ...modes import eval_mode


class Recorder(fx.Interpreter):
    """Runs the traced graph, keeping the values of ``wanted`` nodes; in-place ops run out of place."""

    def __init__(self, gm: fx.GraphModule, wanted: set[fx.Node]) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.wanted, self.values = wanted, {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n in self.wanted:
            self.values[n] = out
        return out

    def call_function(self, target, args, kwargs):
        target = INPLACE_FUNCTIONS.get(target, target)
        if kwargs.get("inplace"):
            kwargs = {**kwargs, "inplace": False}
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target.endswith("_") and not target.startswith("_"):
            target = target[:-1]   # relu_ -> relu
        return super().call_method(target, args, kwargs)


@contextmanager
def out_of_place(model: nn.Module) -> Iterator[None]:
    """Modules such as ReLU(inplace=True) would overwrite values autograd needs."""
    flagged = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in flagged:
        m.inplace = False
    try:
        yield
    finally:
        for m in flagged:
            m.inplace = True


@contextmanager
def replaying(model: nn.Module) -> Iterator[None]:
    """How every replay runs the model: in eval mode, in-place modules out of place; both restored."""
    with eval_mode(model), out_of_place(model):
        yield


def downstream(nodes: Iterable[fx.Node]) -> set[fx.Node]:
    """Every node that (transitively) uses one of ``nodes``, not counting them."""
    seen: set[fx.Node] = set()
    stack = [u for n in nodes for u in n.users]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.users)
    return seen
