"""``fmprune.prune``: the iterative protocol of ``fmprune prune`` on the user's model, data, loss
and metric, in one call.

Each step: statistics from ``calibration_batches`` forward/backward passes of the user's loss,
the lowest-scoring maps removed (``maps_per_step``), ``retrain_steps`` optimizer updates, the
user's metric measured. It stops when the size targets are met, when the metric would fall under
``min_metric`` (that step is undone; with several maps per step it first retries with half as
many), or when nothing is left. With a ``run_dir`` it leaves what ``fmprune prune`` leaves
(``config.json``, ``run.log``, ``steps.csv``, ``summary.json``, the model as :func:`fmprune.save`
writes it) and resumes after ``kill -9`` from the last finished step: call it again with the same
arguments and a freshly built, unpruned model. (After a resume the batches come from a new
iterator over ``train_data``: the loader's order, not the interrupted run's.)
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ..version import __version__
from ..atomic import write_atomically
from ..devices import rng_state, set_rng_state
from ..errors import FmpruneError
from ..graph import Graph
from ..engine.targets import check_target_fraction, targets_met
from ..run.loop import TARGET_REACHED, RunSummary
from ..run.rundir import RunDirectory, read_json, write_json_atomic
from ..run.tensorboard import TensorBoardLogger
from .passes import scalar_loss
from .pruner import Pruner
from .saving import FORMAT, read_record, save, shrink_to, structure_record

LossFn = Callable[[nn.Module, Any], torch.Tensor]


@dataclass
class PruneResult:
    """What :func:`prune` did; ``metric`` is the user's ``evaluate`` (higher is better)."""

    base_metric: float
    final_metric: float
    steps: int
    base_params: int
    final_params: int
    base_macs: int
    final_macs: int
    stop_reason: str
    seconds: float

    mac_reduction = RunSummary.mac_reduction
    compression = RunSummary.compression


class _Finished(Exception):
    """The run directory holds a finished run of this configuration."""


class _Batches:
    """``train_data`` (a DataLoader or any re-iterable of batches) as an endless stream."""

    def __init__(self, data: Iterable) -> None:
        self.data, self.it = data, iter(data)

    def next(self) -> Any:
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.data)
            try:
                return next(self.it)
            except StopIteration:
                raise FmpruneError("train_data yields no batches") from None


def _check(name: str, value: float | None, low: float, high: float, integer: bool = False) -> None:
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (low <= value <= high) or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise FmpruneError(f"{name} must be {kind} in [{low}, {high}], got {value!r}")


def prune(model: nn.Module, example_inputs: Any, train_data: Iterable, loss_fn: LossFn,
          evaluate: Callable[[nn.Module], float], *, criterion: str = "taylor", normalize: str = "rms",
          ignore: Sequence[nn.Module | str] = (), target_macs: float | None = None,
          target_params: float | None = None, maps_per_step: float = 0.05, retrain_steps: int = 0,
          calibration_batches: int = 10, min_metric: float | None = None, max_steps: int | None = None,
          optimizer_fn: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
          flops_lambda: float = 0.0, run_dir: str | Path | None = None, tensorboard: str | Path | None = None,
          on_step: Callable[[int, float, int, int], None] | None = None, verbose: bool = True) -> PruneResult:
    """Prune ``model`` in place, step by step, on the user's own data, loss and metric.

    ``loss_fn(model, batch) -> loss`` is any differentiable scalar (classification, per-pixel,
    several heads summed); ``evaluate(model) -> float`` the metric, higher is better.
    ``maps_per_step`` is a count (>= 1) or a fraction (< 1) of the maps left in scope.
    ``optimizer_fn(params)`` builds the retraining optimizer (default Adam, lr 1e-4, as
    ``fmprune prune``'s ``--retrain-lr``); its state is sliced with the weights at every removal.
    """
    check_target_fraction("target_macs", target_macs)
    check_target_fraction("target_params", target_params)
    _check("maps_per_step", maps_per_step, 1e-12, float("inf"))
    if maps_per_step >= 1 and maps_per_step != int(maps_per_step):
        raise FmpruneError(f"maps_per_step must be an integer count or a fraction below 1, got {maps_per_step}")
    _check("retrain_steps", retrain_steps, 0, float("inf"), integer=True)
    _check("calibration_batches", calibration_batches, 1, float("inf"), integer=True)
    _check("max_steps", max_steps, 1, float("inf"), integer=True)
    _check("min_metric", min_metric, -float("inf"), float("inf"))
    make_optimizer = optimizer_fn or (lambda params: torch.optim.Adam(params, lr=1e-4))
    config = {"criterion": criterion, "normalize": normalize, "flops_lambda": flops_lambda,
              "target_macs": target_macs, "target_params": target_params, "maps_per_step": maps_per_step,
              "retrain_steps": retrain_steps, "calibration_batches": calibration_batches,
              "min_metric": min_metric, "max_steps": max_steps}
    run = _Run(model, example_inputs, train_data, loss_fn, evaluate, config, ignore, make_optimizer,
               run_dir, tensorboard, on_step, verbose)
    try:
        return run.run()
    finally:
        run.close()


class _Run:
    """One call of :func:`prune`: the loop, its records and its resume state."""

    def __init__(self, model, example_inputs, train_data, loss_fn, evaluate, config, ignore, make_optimizer,
                 run_dir, tensorboard, on_step, verbose) -> None:
        self.model, self.example_inputs, self.loss_fn, self.evaluate = model, example_inputs, loss_fn, evaluate
        self.config, self.ignore, self.make_optimizer = config, list(ignore), make_optimizer
        self.batches = _Batches(train_data)
        self.dir = RunDirectory(run_dir) if run_dir is not None else None
        self.on_step, self.verbose = on_step, verbose
        self.tensorboard = None
        if tensorboard is not None:
            self.tensorboard = TensorBoardLogger(tensorboard)
        self.pruner = self._pruner()
        self.base_params, self.base_macs = self.pruner.base_params, self.pruner.base_macs
        self.optimizer = make_optimizer(model.parameters())
        self.step, self.k_cap, self.elapsed_before = 0, None, 0.0
        self.started = time.perf_counter()

    def _pruner(self, graph: Graph | None = None) -> Pruner:
        """A pruner of the model; on ``graph`` (the previous pruner's, or a restored copy) to
        skip tracing again."""
        cfg = self.config
        return Pruner(self.model, self.example_inputs, criterion=cfg["criterion"], normalize=cfg["normalize"],
                      ignore=self.ignore, flops_lambda=cfg["flops_lambda"], graph=graph)

    def say(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)
        if self.dir is not None:
            self.dir.logger().info(f"{self.pruner.criterion.display_name}| {message}")

    # -- the loop
    def run(self) -> PruneResult:
        cfg = self.config
        try:
            resumed = self._resume()
        except _Finished:
            return self._finished()
        if not resumed:
            self.base_metric = self.metric = float(self.evaluate(self.model))
            self._start_records()
        stop = "all maps of the scope pruned but one per group"
        while cfg["max_steps"] is None or self.step < cfg["max_steps"]:
            if self._target_met():
                stop = TARGET_REACHED
                break
            removable = sum(len(self.pruner.graph.alive(n)) - 1 for n in self.pruner.scope)
            if removable == 0:
                break
            before = self._snapshot() if cfg["min_metric"] is not None else None
            chosen = self._prune_once(min(self._k(), removable))
            self._retrain()
            metric = float(self.evaluate(self.model))
            if cfg["min_metric"] is not None and metric < cfg["min_metric"]:
                self._restore(before)
                if len(chosen) > 1:
                    self.k_cap = len(chosen) // 2
                    self.say(f"Reverted: removing {len(chosen)} maps gives {metric:.6g} < {cfg['min_metric']}; "
                             f"now {self.k_cap} per step")
                    continue
                stop = f"metric would fall under {cfg['min_metric']}"
                self.say(f"Stopped: step {self.step + 1} gives {metric:.6g} < {cfg['min_metric']}")
                break
            self.step, self.metric = self.step + 1, metric
            self._record(chosen)
        else:
            stop = f"{cfg['max_steps']} steps done"
        return self._finish(stop)

    def _k(self) -> int:
        per = self.config["maps_per_step"]
        left = sum(len(self.pruner.graph.alive(n)) for n in self.pruner.scope)
        k = int(per) if per >= 1 else max(1, int(per * left))
        return k if self.k_cap is None else min(k, self.k_cap)

    def _prune_once(self, k: int) -> list:
        """Statistics from the user's loss on fresh batches (no update), then one removal."""
        if self.pruner.reads_data:
            self.model.train()            # the training data's passes, as inside a training loop
            for _ in range(self.config["calibration_batches"]):
                self._loss().backward()
                self.pruner.accumulate()
                self.model.zero_grad(set_to_none=True)
        cfg = self.config
        return self.pruner.step(maps=k, target_macs=cfg["target_macs"], target_params=cfg["target_params"],
                                optimizer=self.optimizer)

    def _loss(self) -> torch.Tensor:
        """``loss_fn`` on the next batch, checked: a one-line error names what it returned instead
        of a differentiable scalar (torch's own error would not name ``loss_fn``)."""
        return scalar_loss(self.loss_fn(self.model, self.batches.next()), "loss_fn(model, batch)", grad=True)

    def _retrain(self) -> None:
        self.model.train()
        for _ in range(self.config["retrain_steps"]):
            self.optimizer.zero_grad(set_to_none=True)
            self._loss().backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.pruner.taps.clear()          # retraining's passes are not the next step's statistics

    def _target_met(self) -> bool:
        cfg = self.config
        return targets_met(self.pruner.graph, (self.base_params, self.base_macs), cfg["target_params"],
                           cfg["target_macs"])

    # -- undoing a step: the model object stays the user's, its insides go back
    def _snapshot(self) -> tuple:
        """The model with its graph (copied together, so the copy's graph points at the copy's
        layers and keeps the unpruned numbering) and the optimizer's state."""
        self.pruner.remove_hooks()        # a copy without hooks
        snapshot = copy.deepcopy((self.model, self.pruner.graph)), copy.deepcopy(self.optimizer.state_dict())
        self.pruner = self._pruner(self.pruner.graph)
        return snapshot

    def _restore(self, snapshot: tuple) -> None:
        self.pruner.remove_hooks()
        (model, graph), optimizer_state = snapshot
        self.model.__dict__.update(model.__dict__)
        graph.model = self.model
        self.pruner = self._pruner(graph)
        self.optimizer = self.make_optimizer(self.model.parameters())
        self.optimizer.load_state_dict(optimizer_state)

    # -- records and resume
    def _start_records(self) -> None:
        if self.dir is not None:          # a run killed before its first step starts over
            self.dir.close()
            for p in (self.dir.steps_path, self.dir.log_path):
                p.unlink(missing_ok=True)
            write_json_atomic(self.dir.config_path, {**self.config, "fmprune_version": __version__,
                                                     "torch_version": torch.__version__})
        self.say(f"Metric {self.metric:.8f}, pruned: 0")
        params, macs = self.pruner.graph.total_params(), self.pruner.graph.total_macs()
        self._rows(0, [], params, macs)
        if self.on_step is not None:      # curves start at the unpruned model
            self.on_step(0, self.metric, params, macs)

    def _rows(self, step: int, chosen: list, params: int, macs: int) -> None:
        elapsed = self.elapsed_before + time.perf_counter() - self.started
        if self.dir is not None:
            rows = [{"step": step, "layer": s.layer, "map": s.original, "score": f"{s.score:.9g}",
                     "accuracy": f"{self.metric:.8f}", "params": params, "macs": macs, "seconds": f"{elapsed:.3f}"}
                    for s in chosen] or [{"step": step, "layer": "", "map": "", "score": "",
                                          "accuracy": f"{self.metric:.8f}", "params": params, "macs": macs,
                                          "seconds": f"{elapsed:.3f}"}]
            self.dir.append_steps(rows)
        if self.tensorboard is not None:
            self.tensorboard.log(step, accuracy=self.metric, params=params, macs=macs)

    def _record(self, chosen: list) -> None:
        params, macs = self.pruner.graph.total_params(), self.pruner.graph.total_macs()
        self._rows(self.step, chosen, params, macs)
        self.say(f"Step {self.step}: {len(chosen)} maps removed, metric {self.metric:.8f}, "
                 f"params {params:,}, MACs {macs:,}")
        if self.dir is not None:
            state = {"format": FORMAT + "+state", "model": structure_record(self.model), "step": self.step,
                     "metric": self.metric, "base_metric": self.base_metric,
                     "optimizer": self.optimizer.state_dict(), "k_cap": self.k_cap,
                     "rng": rng_state(self._device()),
                     "elapsed": self.elapsed_before + time.perf_counter() - self.started,
                     "record_sizes": self.dir.record_sizes()}
            write_atomically(self.dir.state_path, lambda tmp: torch.save(state, tmp))
        if self.on_step is not None:      # after the state: a hook that dies loses no step
            self.on_step(self.step, self.metric, params, macs)

    def _resume(self) -> bool:
        if self.dir is None or not self.dir.config_path.exists():
            return False
        previous = read_json(self.dir.config_path)
        if {k: previous.get(k) for k in self.config} != self.config:
            raise FmpruneError(f"{self.dir.path}: holds a run with a different configuration; use another run_dir")
        if self.dir.summary_path.exists():
            raise _Finished()
        if not self.dir.state_path.exists():
            return False
        try:
            state = torch.load(self.dir.state_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise FmpruneError(f"{self.dir.state_path}: unreadable resume state ({type(e).__name__}); delete it "
                               "to start over") from None
        self.pruner.remove_hooks()
        shrink_to(self.model, state["model"], str(self.dir.state_path))
        self.pruner = self._pruner()
        self.base_params, self.base_macs = self._unpruned_sizes()
        self.optimizer = self.make_optimizer(self.model.parameters())
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.metric, self.base_metric = state["step"], state["metric"], state["base_metric"]
        self.k_cap, self.elapsed_before = state["k_cap"], state["elapsed"]
        set_rng_state(state["rng"], self._device())      # dropout draws as the killed run would have
        self.dir.truncate_records(state["record_sizes"])
        self.say(f"Resumed at step {self.step}")
        return True

    def _device(self) -> torch.device:
        return next(iter(self.model.parameters()), torch.zeros(0)).device

    def _finished(self) -> PruneResult:
        """A finished run asked again: its result, and the user's model shrunk to its model."""
        self.pruner.remove_hooks()
        shrink_to(self.model, read_record(self.dir.path / "model.pt"), str(self.dir.path / "model.pt"))
        summary = read_json(self.dir.summary_path)
        result = PruneResult(**{k: summary[k] for k in PruneResult.__dataclass_fields__})
        self.say(f"Already done ({result.stop_reason}): metric {result.base_metric:.6g} -> {result.final_metric:.6g}, "
                 f"MACs x{result.mac_reduction:.2f} fewer, params x{result.compression:.2f} fewer")
        return result

    def _unpruned_sizes(self) -> tuple[int, int]:
        """The unpruned model's size, for targets after a resume: the first row of steps.csv."""
        rows = self.dir.read_steps()
        if not rows:
            raise FmpruneError(f"{self.dir.path}: steps.csv is missing; delete state.pt to start over")
        return int(rows[0]["params"]), int(rows[0]["macs"])

    def _finish(self, stop: str) -> PruneResult:
        graph = self.pruner.graph
        result = PruneResult(self.base_metric, self.metric, self.step, self.base_params, graph.total_params(),
                             self.base_macs, graph.total_macs(), stop,
                             self.elapsed_before + time.perf_counter() - self.started)
        self.say(f"Done ({stop}): metric {self.base_metric:.6g} -> {self.metric:.6g}, "
                 f"MACs x{result.mac_reduction:.2f} fewer, params x{result.compression:.2f} fewer")
        self.pruner.remove_hooks()
        if self.dir is not None:
            save(self.model, self.dir.path / "model.pt")
            write_json_atomic(self.dir.summary_path, {**asdict(result), "mac_reduction": result.mac_reduction,
                                                      "compression": result.compression})
            self.dir.state_path.unlink(missing_ok=True)
        return result

    def close(self) -> None:
        if self.dir is not None:
            self.dir.close()
        if self.tensorboard is not None:
            self.tensorboard.close()



