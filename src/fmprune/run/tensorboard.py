"""TensorBoard event files for training, pruning runs and sweeps: accuracy, parameters, MACs and
loss per step, as the original 2018 project logged them, so runs can be watched live and compared
in TensorBoard. Needs the optional ``tensorboard`` package (``pip install 'fmprune[tensorboard]'``);
without it, asking for TensorBoard output fails at once with one line, before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import FmpruneError

INSTALL_HINT = "pip install 'fmprune[tensorboard]'"


class TensorBoardMissing(FmpruneError):
    """TensorBoard output was asked for, but the tensorboard package is not installed."""


class TensorBoardLogger:
    """Writes scalars under ``log_dir`` (tags ``<prefix>accuracy``, ``params``, ``macs``, ``loss``).

    Its methods fit fmprune's progress hooks: :meth:`on_train_step` and :meth:`on_train_epoch`
    are training's ``on_step`` (``step, total, loss``; steps are counted here, since a recipe may
    number them per epoch) and ``on_epoch`` (``epoch, epochs, {"val": accuracy}``, logged at the
    epoch's last iteration); :meth:`on_prune_step` is a pruning run's (``record, total``, the record
    having ``step``, ``accuracy``, ``params``, ``macs`` and optionally ``loss``). ``purge_step``:
    a resumed run drops the events an interrupted one wrote from that step on, so curves never
    double back. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, log_dir: Path | str, prefix: str = "", purge_step: int | None = None) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.prefix = prefix
        self._writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        self.iterations = 0   # training iterations seen so far

    def log(self, step: int, **scalars: float | int | None) -> None:
        """One value per tag at ``step``; ``None`` values are skipped (e.g. no loss without retraining)."""
        for tag, value in scalars.items():
            if value is not None:
                self._writer.add_scalar(self.prefix + tag, float(value), step)

    def on_train_step(self, step: int, total: int, loss: float) -> None:
        self.iterations += 1
        self.log(self.iterations, loss=loss)

    def on_train_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self.log(self.iterations, **{"accuracy" if split == "val" else f"accuracy_{split}": value
                                     for split, value in metrics.items()})

    def on_prune_step(self, record: Any, total: int | None = None) -> None:
        self.log(record.step, accuracy=record.accuracy, params=record.params, macs=record.macs,
                 loss=getattr(record, "loss", None))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chain(*hooks: Callable[..., None] | None) -> Callable[..., None]:
    """One hook calling each given hook in turn (``None`` entries skipped): a progress bar and a
    TensorBoard logger on the same ``on_step``."""
    present = [h for h in hooks if h is not None]

    def call(*args: Any) -> None:
        for hook in present:
            hook(*args)
    return call


def require_tensorboard() -> None:
    """Fail with one line now if TensorBoard output cannot be written (call before long work)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise TensorBoardMissing(f"TensorBoard output needs the tensorboard package: {INSTALL_HINT}") from None


def resumed_step(run_dir: Path | str) -> int | None:
    """The step a run directory's resume state continues from (``purge_step`` of its logger:
    TensorBoard drops the events an interrupted run wrote from there on); 0 for an interrupted
    run without a resume state (runs that never retrain restart from the base model); None for a
    fresh run."""
    state = Path(run_dir) / "state.pt"
    if not state.is_file():
        return 0 if (Path(run_dir) / "steps.csv").is_file() else None
    try:
        return int(torch.load(state, map_location="cpu", weights_only=False)["step"]) + 1
    except Exception:  # noqa: BLE001 - the run itself reports a damaged state
        return None
