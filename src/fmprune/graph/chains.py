"""Where a producer's feature map is made: the chain of nodes from the layer's own call to its
feature node, and the BatchNorm in it. The general engine, the pruner's hooks and the BatchNorm
criteria read maps there."""

from __future__ import annotations

from torch import fx, nn

from ..errors import FmpruneError
from ..layers import BATCH_NORMS
from .graph import Member


def producer_chain(member: Member) -> list[fx.Node]:
    """The nodes from the producer's own call to its feature node (norms, activations), in order."""
    chain = [member.feature_node]
    node = member.feature_node
    while not (node.op == "call_module" and node.target == member.name):
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if not args or len(chain) > 32:
            raise FmpruneError(f"cannot find the output of layer {member.name!r} in the traced graph")
        node = args[0]
        chain.append(node)
    return chain[::-1]


def norm_node(member: Member, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The last BatchNorm between the producer and its feature map, or None."""
    norms = [n for n in producer_chain(member)
             if n.op == "call_module" and isinstance(modules.get(n.target), BATCH_NORMS)]
    return norms[-1] if norms else None
