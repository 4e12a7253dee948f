"""A run method: one way of turning a base checkpoint into a run directory (map-by-map pruning,
one-shot pruning, weight or unit pruning). Each method's module declares one :class:`RunMethod`;
the table of them (:data:`fmprune.study.methods.METHODS`) is what experiment files, sweeps and
reports read, and the run directory's rules (:mod:`.rundir`: one method and one configuration
per directory, the same stamps) are what every method's run keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..data import Splits


@dataclass(frozen=True)
class RunMethod:
    """Everything a sweep, an experiment file and a report need to know of one method."""

    name: str                         # experiment files' ``kind``; config.json's "kind"
    config: type                      # frozen dataclass: its fields are the experiment keys; to_dict, from_dict
    run: Callable[..., Any]           # run(checkpoint, splits, config, run_dir, device=..., **hooks) -> summary
    describe: Callable[[Any], str]    # a summary as one line of a sweep's progress
    step_hook: str | None = None      # the keyword of ``run`` taking a per-step hook (TensorBoard in sweeps)
    example: dict = field(default_factory=dict)   # a run of seconds on LeNet: what the registry's tests run

    def sweep_run(self, checkpoint: str, splits: Splits, config: dict, run_dir: Path | str,
                  device: str | torch.device, **hooks: Any) -> str:
        """One run of a sweep from its configuration dict; its one-line outcome."""
        summary = self.run(checkpoint, splits, self.config.from_dict(config), run_dir, device=device, **hooks)
        return self.describe(summary)
