"""A sparsify run: what ``fmprune sparsify`` does, as one call (:func:`run_sparsify`).

Loads a checkpoint, prunes weights (masks through torch's prune API) or units (physically,
through the graph) in one or more rounds with optional retraining, and writes ``config.json``,
``run.log``, ``model.pt`` (a plain model: masks removed, zeros in place) and ``summary.json``.
Everything is checked before the run directory is touched, so bad input leaves nothing behind."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data import Split, Splits
from ..devices import resolve_device
from ..run.checkpoint import Checkpoint, check_input_shape, load_checkpoint_for
from ..run.method import RunMethod
from ..run.rundir import (RunDirectory, base_sha256, claimed, held_config, read_summary, run_stamp,
                           write_json_atomic)
from ..seeding import independent_generator
from ..training import BatchStream, evaluate, fine_tune
from .sparsify_config import UNIT_METHOD, SparsifyConfig
from .density import LayerDensity, total_density, weight_density
from .weight_layers import choose_layers, parse_layer_list, weight_layers
from .masks import MaskHold, finalize
from .modelio import build_traced, save_model
from .schedule import prune_weights, round_amounts
from .select import select_units
from .units import all_group_norms, prune_units

KIND = "sparsify"   # config.json's "kind": tells reports and sweeps this is not a map-pruning run


@dataclass
class RoundRecord:
    round: int
    amount: float
    nonzero: int
    params: int
    accuracy_pruned: float
    accuracy: float              # after retraining (= accuracy_pruned without it)


@dataclass
class SparsifySummary:
    method: str
    scope: str
    amount: float
    eval_split: str
    base_accuracy: float
    final_accuracy: float
    weights: int                 # weights of the layers counted (Linear/Conv) before pruning
    nonzero_before: int
    nonzero_after: int           # in the saved model (unit pruning: of the shrunk layers)
    params_before: int
    params_after: int
    units_before: dict[str, int]
    units_after: dict[str, int]
    layers: list[dict]           # per layer after: name, weights, nonzero
    rounds: list[RoundRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def density(self) -> float:
        return self.nonzero_after / self.weights if self.weights else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "density": self.density}


def _weight_count(rows: list[LayerDensity]) -> tuple[int, int]:
    total = total_density(rows)
    return total.weights, total.nonzero


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class SparsifyRun:
    """One run bound to its run directory; :meth:`run` executes it."""

    def __init__(self, base: Checkpoint, base_path: str, splits: Splits, config: SparsifyConfig,
                 run_dir: Path | str, device: str | torch.device | None = None,
                 on_round: Callable[[RoundRecord, int], None] | None = None) -> None:
        self.base, self.base_path, self.splits, self.config = base, base_path, splits, config
        self.device = resolve_device(device)
        self.on_round = on_round
        check_input_shape(base, splits)
        model, graph = build_traced(base)
        self.model = model.to(self.device)    # in place: the graph's modules are the model's
        self.traced = graph                   # records removed units for the saved checkpoint
        self.graph = graph if config.method == UNIT_METHOD else None
        self.layers = self._layers()
        self.original = self._units()
        if self.graph is not None:   # a whole layer removed: refused before anything is written
            select_units(all_group_norms(self.graph, self.layers), config.amount, config.scope)
        self.dir_path = Path(run_dir)
        self._check_run_dir()

    def _layers(self) -> list[str]:
        wanted = parse_layer_list(self.config.layers)
        if self.graph is None:
            return choose_layers(list(weight_layers(self.model)), wanted, "weight pruning")
        for name in wanted or []:
            self.graph.group(name)   # one line naming an unknown layer, or one whose units must stay
        return [n for n in self.graph.names if wanted is None or n in wanted]

    def _units(self) -> dict[str, int]:
        """Units (output maps) per layer now."""
        if self.graph is not None:
            return {n: s for n, s in self.graph.sizes().items() if n in self.layers}
        return {n: int(self.model.get_submodule(n).weight.shape[0]) for n in self.layers}

    def _check_run_dir(self) -> None:
        self.base_sha = base_sha256(self.base_path)
        held = held_config(self.dir_path, KIND, self.config, self.base_sha)
        self.finished = held is not None and (self.dir_path / "summary.json").is_file()   # run again: its result again

    def _write_config(self, rundir: RunDirectory) -> None:
        write_json_atomic(rundir.config_path, {
            **self.config.to_dict(), **run_stamp(KIND, self.base, self.base_path, self.base_sha, self.device)})

    def _optimizer(self) -> torch.optim.Optimizer:
        params, lr = self.model.parameters(), self.config.retrain_lr
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9)
        return torch.optim.Adam(params, lr=lr)

    def _prune_round(self, amount: float, generator: torch.Generator,
                     optimizer: torch.optim.Optimizer | None, hold: MaskHold | None) -> None:
        cfg = self.config
        if self.graph is not None:
            prune_units(self.graph, self.layers, amount, cfg.scope, self.original, optimizer)
            return
        prune_weights(self.model, self.layers, amount, cfg.scope, cfg.method, generator)
        if hold is not None:
            hold.enforce()

    def run(self) -> SparsifySummary:
        if self.finished:
            return read_summary(SparsifySummary, self.dir_path / "summary.json")
        cfg = self.config
        started = time.perf_counter()
        evaluation: Split = getattr(self.splits, cfg.eval_split).subset(cfg.eval_size).to(self.device)
        rundir = RunDirectory(self.dir_path)
        rundir.log_path.unlink(missing_ok=True)
        self._write_config(rundir)
        log = rundir.logger()
        name = cfg.method.capitalize()
        torch.manual_seed(cfg.seed)   # dropout while retraining: same seed, same run
        generator = independent_generator("weight-masks", cfg.seed)
        before = weight_density(self.model)
        units_before = dict(self.original)
        params_before = _params(self.model)
        base_accuracy = evaluate(self.model, evaluation)
        weights, nonzero_before = _weight_count(before)
        log.info(f"{name}| Test accuracy {base_accuracy:.8f}, non-zero weights {nonzero_before:,} of {weights:,}")
        optimizer = self._optimizer() if cfg.retrain else None
        hold = MaskHold(self.model, optimizer) if optimizer is not None else None
        stream = BatchStream(self.splits.train.to(self.device), cfg.retrain_batch, cfg.seed)
        records: list[RoundRecord] = []
        accuracy = base_accuracy
        amounts = round_amounts(cfg.amount, cfg.rounds)
        for r, amount in enumerate(amounts, 1):
            self._prune_round(amount, generator, optimizer, hold)
            pruned_accuracy = accuracy = evaluate(self.model, evaluation)
            if optimizer is not None:
                fine_tune(self.model, stream, optimizer, cfg.retrain)
                accuracy = evaluate(self.model, evaluation)
            _, nonzero = _weight_count(weight_density(self.model))
            record = RoundRecord(r, amount, nonzero, _params(self.model), pruned_accuracy, accuracy)
            records.append(record)
            retrained = f", after {cfg.retrain} retraining iterations {accuracy:.8f}" if cfg.retrain else ""
            log.info(f"{name}| Round {r}/{cfg.rounds}: {amount:.2%} pruned ({cfg.scope}), non-zero weights "
                     f"{nonzero:,}, accuracy {pruned_accuracy:.8f}{retrained}")
            if self.on_round is not None:
                self.on_round(record, cfg.rounds)
        if hold is not None:
            hold.remove()
        finalize(self.model)
        after = weight_density(self.model)
        summary = SparsifySummary(
            method=cfg.method, scope=cfg.scope, amount=cfg.amount, eval_split=cfg.eval_split,
            base_accuracy=base_accuracy, final_accuracy=accuracy, weights=weights,
            nonzero_before=nonzero_before, nonzero_after=_weight_count(after)[1],
            params_before=params_before, params_after=_params(self.model), units_before=units_before,
            units_after=self._units(),
            layers=[asdict(r) for r in after], rounds=records, seconds=time.perf_counter() - started)
        origin = {"base_checkpoint": self.base_path, "sparsify": cfg.to_dict()}
        save_model(self.model, self.base, self.traced, rundir.model_path, accuracies={cfg.eval_split: accuracy},
                   seed=cfg.seed, origin=origin)
        write_json_atomic(rundir.summary_path, summary.to_dict())
        log.info(f"{name}| Done in {summary.seconds:.1f} s: accuracy {base_accuracy:.8f} -> {accuracy:.8f}, "
                 f"non-zero weights {nonzero_before:,} -> {summary.nonzero_after:,}")
        rundir.close()
        return summary


def run_sparsify(checkpoint: Path | str, splits: Splits, config: SparsifyConfig, run_dir: Path | str,
                 device: str | torch.device | None = None,
                 on_round: Callable[[RoundRecord, int], None] | None = None) -> SparsifySummary:
    """Sparsify the model of ``checkpoint`` as ``config`` says, writing everything to ``run_dir``."""
    base = load_checkpoint_for(checkpoint, splits)
    with claimed(run_dir, KIND):
        return SparsifyRun(base, str(checkpoint), splits, config, run_dir, device, on_round).run()


def describe(summary: SparsifySummary) -> str:
    """One line for a sweep's progress output."""
    return (f"{summary.method} {summary.scope} {summary.amount:.0%}: {summary.eval_split} accuracy "
            f"{summary.base_accuracy:.4f} -> {summary.final_accuracy:.4f}, non-zero weights "
            f"{summary.nonzero_before:,} -> {summary.nonzero_after:,}")


SPARSIFY = RunMethod(KIND, SparsifyConfig, run_sparsify, describe, example={"amount": 0.5, "eval_size": 100})
