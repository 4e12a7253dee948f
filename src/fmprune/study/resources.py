"""What one run asks of a Ray node: the ``[resources]`` table of experiment and tune files.

    [resources]
    cpus = 2        # Ray CPUs per run; the run computes with that many torch threads (default 1)
    gpus = 0.25     # Ray GPUs per run: a fraction lets several small runs share one GPU (default 0)

Only Ray reads it: the local process pool runs each run on one CPU thread, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FmpruneError

RESOURCE_KEYS = ("cpus", "gpus")


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0

    @property
    def threads(self) -> int:
        """Torch threads of a run: its whole CPUs, at least one."""
        return max(1, int(self.cpus))


def parse_resources(table: object, where: str) -> Resources:
    """``[resources]`` checked key by key; ``where`` starts the one-line error (the file)."""
    if not isinstance(table, dict):
        raise FmpruneError(f"{where}: 'resources' must be a table")
    for key, value in table.items():
        if key not in RESOURCE_KEYS:
            raise FmpruneError(f"{where}: unknown key 'resources.{key}' (known: {', '.join(RESOURCE_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise FmpruneError(f"{where}: 'resources.{key}' = {value!r} should be a number >= 0")
    resources = Resources(**{k: float(v) for k, v in table.items()})
    if resources.cpus <= 0 and resources.gpus <= 0:
        raise FmpruneError(f"{where}: a run needs 'resources.cpus' or 'resources.gpus' above 0")
    if resources.gpus > 1 and resources.gpus != int(resources.gpus):
        raise FmpruneError(f"{where}: 'resources.gpus' = {resources.gpus} must be a fraction under 1 "
                           "or a whole number")
    return resources
