"""The run methods, in one table: experiment files name them (``kind``), sweeps run them, reports
read their directories. Adding a method is its module (a :class:`~fmprune.run.method.RunMethod`
beside its run function), one entry here and one command."""

from __future__ import annotations

from ..baselines.oneshot import ONESHOT
from ..errors import FmpruneError
from ..run.loop import PRUNE
from ..run.method import RunMethod
from ..unstructured.run import SPARSIFY

METHODS: dict[str, RunMethod] = {m.name: m for m in (PRUNE, SPARSIFY, ONESHOT)}


def method(name: str) -> RunMethod:
    """The method called ``name``, or one line naming the known ones."""
    if name not in METHODS:
        raise FmpruneError(f"run method {name!r} is not one of {', '.join(METHODS)}")
    return METHODS[name]
