"""Shrinking a freshly traced, unpruned model to a stored structure: the maps alive per group
(numbered as at trace time). Checkpoints and ``fmprune.load`` rebuild pruned models this way."""

from __future__ import annotations

from typing import Iterable, Mapping

from ..errors import PruningError
from .graph import Graph


def restrict_to(graph: Graph, alive: Mapping[str, Iterable[int]]) -> None:
    """Remove from each group of ``alive`` every map not listed there; a group the graph lacks,
    or maps it does not have, raise :class:`PruningError` before that group changes."""
    for name, kept in alive.items():
        if name not in graph.names:
            raise PruningError(f"group {name!r} is not in the model (groups: {', '.join(graph.names)})")
        group = graph.group(name)
        wanted = set(kept)
        if not wanted:
            raise PruningError(f"keeps no map of group {name!r}")
        missing = sorted(wanted - set(group.original))
        if missing:
            listed = ", ".join(map(str, missing[:8])) + (", …" if len(missing) > 8 else "")
            raise PruningError(f"group {name!r} keeps maps the built model does not have ({len(missing)} "
                               f"map{'s' if len(missing) > 1 else ''}: {listed}; the built group has {group.size})")
        drop = [i for i, original in enumerate(group.original) if original not in wanted]
        if drop:
            graph.remove(name, drop)
