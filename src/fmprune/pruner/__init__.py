"""fmprune inside the user's own loop: the :class:`Pruner`, saving and loading pruned models of
the user's own class, and the one-call loop :func:`prune`."""

from .prune_loop import PruneResult, prune
from .pruner import Pruner, PruneReport
from .saving import load, save

__all__ = ["Pruner", "PruneReport", "prune", "PruneResult", "save", "load"]
