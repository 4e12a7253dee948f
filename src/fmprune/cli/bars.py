"""Progress bars of the pruning and training commands (on stderr; plain lines when piped)."""

from __future__ import annotations

from typing import Callable

from ..progress import Progress, progress
from ..run.loop import StepRecord


class PruneProgress:
    """A bar over the pruning steps (total = the planned steps, unknown for fractional steps)
    and one over the final tuning's iterations; created when they start, so an early error
    prints no empty bar."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: dict[str, Progress] = {}

    def _bar(self, name: str, total: int | None, unit: str) -> Progress:
        if name not in self.bars:
            self.bars[name] = progress(desc=name, total=total or None, unit=unit, disable=self.quiet)
        return self.bars[name]

    def on_step(self, rec: StepRecord, total: int) -> None:
        bar = self._bar("prune", total, "step")
        bar.n = rec.step
        bar.set_postfix(acc=f"{rec.accuracy:.4f}", params=f"{rec.params:,}", refresh=False)
        bar.refresh()

    def on_tune(self, step: int, total: int, loss: float) -> None:
        bar = self._bar("final tune", total, "it")
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def train_bar(desc: str, disable: bool = False) -> tuple[Progress, Callable[[int, int, float], None]]:
    """One bar over a training loop's iterations (its total learnt from the first step)."""
    bar = progress(total=1, desc=desc, unit="it", disable=disable)

    def on_step(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}")
    return bar, on_step
