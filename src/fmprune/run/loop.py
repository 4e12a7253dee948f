"""The pruning loop: scope, steps, retraining policy, stop rules, rank-once or recompute, resume.

One call, :func:`run_pruning`, does what ``fmprune prune`` does, so a notebook gets the same power.
"""

from __future__ import annotations

import copy
import functools
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from ..atomic import write_atomically
from .distributed import ShardedStream, data_parallel
from .checkpoint import Checkpoint, check_input_shape, load_checkpoint_for, make_checkpoint, save_checkpoint
from .config import PruneConfig
from ..criteria import create_criterion
from ..data import Splits, calibration_subset
from ..distillation import Distillation
from ..devices import resolve_device, rng_state, set_rng_state
from ..engine import Selected, create_engine
from ..engine.engine_base import data_free_scope
from ..engine.targets import smallest_size, targets_met, trim_to_target
from ..errors import FmpruneError, PruningError
from ..graph import Graph
from ..latency import LatencyTable, latency_table, latency_target, measure_model
from .method import RunMethod
from .rundir import (PRUNE_KIND, RunDirectory, base_sha256, claimed, held_config, read_summary, run_stamp,
                     write_json_atomic)
from ..data.augment import Augmentation
from ..training import BatchStream, SGDConfig, fine_tune, recipe_from_dict, resolve_recipe

ALL_PRUNED = "all maps of the scope pruned but one per layer"
TARGET_REACHED = "target size reached"


@dataclass
class StepRecord:
    step: int
    chosen: list[Selected]
    accuracy: float
    params: int
    macs: int
    seconds: float


@dataclass
class RunSummary:
    base_accuracy: float
    final_accuracy: float
    steps: int
    maps_pruned: dict[str, int]
    maps_left: dict[str, int]
    base_params: int
    final_params: int
    base_macs: int
    final_macs: int
    stop_reason: str
    seconds: float
    eval_split: str
    extra: dict = field(default_factory=dict)

    @property
    def compression(self) -> float:
        return self.base_params / self.final_params

    @property
    def mac_reduction(self) -> float:
        return self.base_macs / self.final_macs

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(compression=self.compression, mac_reduction=self.mac_reduction)
        return d


def retraining_augmentation(recipe: dict, splits: Splits) -> Augmentation | None:
    """Retraining augments the images as the base model's training did: the SGD recipe's
    augmentation for these data (crop + flip on CIFAR, none on digits); LeNet's recipe none."""
    trained_with = recipe_from_dict(recipe) if recipe else None
    if isinstance(trained_with, SGDConfig):
        return resolve_recipe(trained_with, splits).augmentation()
    return None


class PruningRun:
    """A pruning run bound to a run directory; :meth:`run` executes (or resumes) it."""

    def __init__(self, base: Checkpoint, splits: Splits, config: PruneConfig, run_dir: Path | str,
                 base_path: str = "", on_step: Callable[[StepRecord, int], None] | None = None,
                 device: str | torch.device | None = None,
                 on_tune: Callable[[int, int, float], None] | None = None, distributed: bool = False) -> None:
        self.base, self.splits, self.config = base, splits, config
        self.distributed = distributed
        self.device = resolve_device(device)
        self.dir = RunDirectory(run_dir)
        self.on_step, self.on_tune = on_step, on_tune
        self.base_path = base_path
        self.criterion = create_criterion(config.criterion)
        check_input_shape(base, splits)
        self.eval_split = getattr(splits, config.eval_split).subset(config.eval_size).to(self.device)
        self.calibration = calibration_subset(splits.train, config.calibration, config.seed).to(self.device)
        self.model, self.graph = self._build(base)
        self.scope = self.graph.scope(config.scope)
        self.latency = self._latency_table() if config.uses_latency else None
        self.latency_goal = latency_target(self.latency, self.latency.measured_ms if self.latency else None,
                                           config.target_latency)
        self.left_out: list[str] = []
        if config.scope == "all":   # attention heads have no feature maps for a data criterion
            self.scope, self.left_out = data_free_scope(self.graph, self.scope, self.criterion)
        self.engine = self._engine()
        self.optimizer = (torch.optim.Adam(self.model.parameters(), lr=config.retrain_lr)
                          if config.retrain else None)
        self.distill = self._teacher()
        self.stream = BatchStream(splits.train.to(self.device), config.retrain_batch, config.seed,
                                  retraining_augmentation(base.recipe, splits))
        if distributed:   # each rank trains on its share of every minibatch (see run/distributed.py)
            self.stream = ShardedStream(self.stream, dist.get_rank(), dist.get_world_size())
        self.base_params, self.base_macs = self.graph.total_params(), self.graph.total_macs()
        self.step = 0
        self.k_cap: int | None = None      # maps per step after a back-off (min-accuracy runs)
        self.ranking: list[tuple[str, int, float]] | None = None
        self.started = time.perf_counter()
        self.elapsed_before = 0.0

    def _build(self, checkpoint: Checkpoint) -> tuple[nn.Module, Graph]:
        model, graph = checkpoint.build_traced(self.config.ignore)
        return model.to(self.device), graph   # moves the parameters in place: the graph stays valid

    def _engine(self):
        cfg = self.config
        engine = create_engine(self.graph, self.criterion, self.eval_split, self.calibration, self.scope,
                               cfg.normalize, cfg.flops_lambda, cfg.seed, cfg.group_reduction, per_cost=cfg.per_cost)
        engine.latency, engine.latency_lambda, engine.round_to = self.latency, cfg.latency_lambda, cfg.rounding
        return engine

    def _teacher(self) -> Distillation | None:
        """The unpruned model, frozen, for runs that retrain with distillation (a resumed run
        builds it from the base checkpoint again, not from the pruned state)."""
        cfg = self.config
        if not cfg.distill or not (cfg.retrain or cfg.final_tune):
            return None
        return Distillation.owning(self.base.build().to(self.device), cfg.distill, cfg.distill_temperature)

    def _latency_table(self) -> LatencyTable:
        """The base model's latency table in the configured runtime (cached across runs)."""
        cfg = self.config
        model, graph = self.base.build_traced(cfg.ignore)
        return latency_table(model, graph, self.base.arch, cfg.latency_runtime, cfg.latency_batch,
                             cfg.latency_device, clock=cfg.latency_clock)

    # -- the loop
    def total_steps(self) -> int | None:
        """Planned steps (None with a fractional step size, which runs until nothing is left)."""
        removable = sum(self.graph.group(n).size - 1 for n in self.scope)
        if self.config.maps_per_step < 1:
            planned = None
        else:
            planned = math.ceil(removable / int(self.config.maps_per_step))
        if self.config.steps is not None:
            planned = self.config.steps if planned is None else min(planned, self.config.steps)
        return planned

    def _k(self) -> int:
        if self.config.maps_per_step >= 1:
            k = int(self.config.maps_per_step)
        else:
            left = sum(len(self.engine.alive[n]) for n in self.scope)
            k = max(1, int(self.config.maps_per_step * left))
        return k if self.k_cap is None else min(k, self.k_cap)

    def _select(self, k: int) -> list[Selected]:
        if not self.config.rank_once:
            return self.engine.select(k)
        if self.ranking is None:
            chosen = self.engine.select(sum(len(self.engine.alive[n]) for n in self.scope))
            self.ranking = [(s.layer, s.original, s.score) for s in chosen]
        picked, left = [], {n: len(self.engine.alive[n]) for n in self.scope}
        while self.ranking and len(picked) < k:
            layer, original, score = self.ranking.pop(0)
            if left[layer] > 1 and original in self.engine.alive[layer]:
                left[layer] -= 1
                picked.append(Selected(layer, self.engine.alive[layer].index(original), original, score))
        return picked

    def _retrain(self, layers: list[str]) -> None:
        if not self.config.retrain:
            return
        frozen: list[nn.Parameter] = []
        if self.config.retrain_only_pruned_layer:
            allowed = {id(p) for n in layers for m in self.graph.members(n) for p in m.module.parameters()}
            frozen = [p for p in self.model.parameters() if id(p) not in allowed and p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
        fine_tune(self._trainable(), self.stream, self.optimizer, self.config.retrain, distill=self.distill)
        for p in frozen:
            p.requires_grad_(True)
        self.engine.invalidate_all()

    def _trainable(self) -> nn.Module:
        """The model as retraining sees it: wrapped in DDP for a distributed run."""
        return data_parallel(self.model) if self.distributed else self.model

    def run(self) -> RunSummary:
        """Prune (or resume) to the end; the run log is closed however the run ends, so an
        error or an interrupt leaves no open handler behind (sweeps run many runs per process)."""
        try:
            return self._run()
        finally:
            self.dir.close()

    def _run(self) -> RunSummary:
        cfg = self.config
        if self._previous_config() is not None and self.dir.summary_path.exists():
            return read_summary(RunSummary, self.dir.summary_path)   # run again: its result again
        resumed = self._resume_or_start()
        log = self.dir.logger()
        base_accuracy = self.base_accuracy
        accuracy = self.last_accuracy
        planned = self.total_steps()
        stop_reason = ALL_PRUNED
        last_good: dict | None = None
        if resumed:
            log.info(f"{self.criterion.display_name}| Resumed at step {self.step}")
        if self.left_out:
            log.info(f"{self.criterion.display_name}| Not scored (no feature maps): {', '.join(self.left_out)}")
        while planned is None or self.step < planned:
            if self._target_reached():
                stop_reason = TARGET_REACHED
                break
            if cfg.min_accuracy is not None:
                last_good = self._state()
            picked = self._select(self._k())
            chosen = trim_to_target(self.graph, picked, (self.base_params, self.base_macs),
                                    cfg.target_params, cfg.target_macs, self.latency_goal, cfg.rounding)
            if self.ranking is not None:   # rank once: what the target did not need stays ranked
                self.ranking[:0] = [(s.layer, s.original, s.score) for s in picked[len(chosen):]]
            if not chosen:
                stop_reason = ALL_PRUNED   # fractional steps end here rather than at a planned count
                break
            self.engine.remove_selected(chosen, self.optimizer)
            self._retrain(sorted({s.layer for s in chosen}))
            accuracy = self.engine.accuracy()
            if cfg.min_accuracy is not None and accuracy < cfg.min_accuracy:
                failed = accuracy
                self._restore(last_good)
                accuracy = self.last_accuracy
                # back off: try the next step with half as many maps, while that is fewer (round_to
                # keeps a whole chunk per group however small the cap: the same maps would come again)
                if len(chosen) > 1 and (self.k_cap is None or len(chosen) // 2 < self.k_cap):
                    self.k_cap = len(chosen) // 2
                    log.info(f"{self.criterion.display_name}| Reverted: removing {len(chosen)} maps would give "
                             f"accuracy {failed:.8f} < {cfg.min_accuracy}; now {self.k_cap} per step")
                    continue
                log.info(f"{self.criterion.display_name}| Stopped: step {self.step + 1} would give "
                         f"accuracy {failed:.8f} < {cfg.min_accuracy}")
                stop_reason = f"accuracy would fall under {cfg.min_accuracy}"
                break
            self.step += 1
            self.last_accuracy = accuracy
            self._record(chosen, accuracy)
            if cfg.retrain and self.step % cfg.save_every == 0:
                self.save_state()
        else:
            if cfg.steps is not None and planned == cfg.steps:
                stop_reason = f"{cfg.steps} steps done"
        if cfg.final_tune:
            accuracy = self._final_tune(accuracy)
        return self._finish(base_accuracy, accuracy, stop_reason)

    def _final_tune(self, accuracy: float) -> float:
        """Train the pruned model ``final_tune`` iterations with a one-cycle schedule (the base
        recipe's shape); the run's final accuracy is measured after it."""
        cfg = self.config
        before = self._state()
        optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.final_tune_lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.final_tune_lr,
                                                       total_steps=cfg.final_tune, pct_start=0.15)
        fine_tune(self._trainable(), self.stream, optimizer, cfg.final_tune, schedule, self.on_tune,
                  distill=self.distill)
        self.engine.invalidate_all()
        tuned = self.engine.accuracy()
        self.dir.logger().info(f"{self.criterion.display_name}| Final tuning ({cfg.final_tune} iterations): "
                               f"accuracy {accuracy:.8f} -> {tuned:.8f}")
        self.final_tune_from = accuracy
        if tuned < accuracy:   # never hand back a worse model than the loop ended with
            self._restore(before)
            self.dir.logger().info(f"{self.criterion.display_name}| Final tuning lowered accuracy: kept the untuned model")
            return accuracy
        return tuned

    def _target_reached(self) -> bool:
        return targets_met(self.graph, (self.base_params, self.base_macs), self.config.target_params,
                           self.config.target_macs, self.latency_goal)

    def _record(self, chosen: list[Selected], accuracy: float) -> None:
        elapsed = self.elapsed_before + time.perf_counter() - self.started
        params, macs = self.graph.total_params(), self.graph.total_macs()
        pruned = self.maps_pruned_total()
        self.dir.append_steps([
            {"step": self.step, "layer": s.layer, "map": s.original, "score": f"{s.score:.9g}",
             "accuracy": f"{accuracy:.8f}", "params": params, "macs": macs, "seconds": f"{elapsed:.3f}"}
            for s in chosen
        ])
        self.dir.logger().info(f"{self.criterion.display_name}| Test accuracy {accuracy:.8f}, pruned: {pruned}")
        if self.on_step is not None:
            self.on_step(StepRecord(self.step, chosen, accuracy, params, macs, elapsed), self.total_steps() or 0)

    def maps_pruned_total(self) -> int:
        return sum(g.traced_size - g.size for g in self.graph.groups)

    # -- snapshots, resume, outputs
    def _snapshot(self) -> Checkpoint:
        return make_checkpoint(self.model, self.base.model_spec, self.graph)

    def _state(self) -> dict:
        """Everything needed to continue exactly from the current step (resume, or revert)."""
        return {
            "step": self.step,
            "model": dict(self._snapshot().__dict__),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer else None,
            "stream": self.stream.state(),
            "raw_scores": {n: None if v is None else v.clone() for n, v in self.engine.raw.items()},
            "generator": self.engine.generator.get_state(),
            "torch_rng": rng_state(self.device),
            "ranking": list(self.ranking) if self.ranking is not None else None,
            "k_cap": self.k_cap,
            "base_accuracy": self.base_accuracy,
            "last_accuracy": self.last_accuracy,
            "elapsed": self.elapsed_before + time.perf_counter() - self.started,
            "record_sizes": self.dir.record_sizes(),
        }

    def _restore(self, state: dict) -> None:
        """Rebuild model, optimizer, engine and counters from :meth:`_state`'s output."""
        self.model, self.graph = self._build(Checkpoint(**state["model"]))
        self.engine = self._engine()
        self.engine.raw = dict(state["raw_scores"])
        self.engine.generator.set_state(state["generator"])
        set_rng_state(state["torch_rng"], self.device)
        if self.config.retrain:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.retrain_lr)
            self.optimizer.load_state_dict(state["optimizer"])
        self.stream.restore(state["stream"])
        self.ranking = list(state["ranking"]) if state["ranking"] is not None else None
        self.k_cap = state.get("k_cap")
        self.step = state["step"]
        self.base_accuracy, self.last_accuracy = state["base_accuracy"], state["last_accuracy"]

    def save_state(self) -> None:
        """Write :meth:`_state` atomically to ``state.pt`` (a kill mid-write keeps the old one)."""
        state = self._state()
        write_atomically(self.dir.state_path, lambda tmp: torch.save(state, tmp))

    @functools.cached_property
    def _base_sha(self) -> str:
        return base_sha256(self.base_path)

    def _previous_config(self) -> dict | None:
        """The directory's config.json when it holds this very run; None for a new directory."""
        return held_config(self.dir.path, PRUNE_KIND, self.config, self._base_sha)

    def _resume_or_start(self) -> bool:
        if self._previous_config() is not None and self.dir.state_path.exists():
            self._load_state()
            return True
        self._check_feasible(self.engine.accuracy())
        for p in (self.dir.steps_path, self.dir.log_path):
            p.unlink(missing_ok=True)
        torch.manual_seed(self.config.seed)  # dropout while retraining: same seed, same run
        write_json_atomic(self.dir.config_path, {**self.config.to_dict(), **run_stamp(
            PRUNE_KIND, self.base, self.base_path, self._base_sha, self.device)})
        self.base_accuracy = self.last_accuracy = self.engine.accuracy()
        self.dir.append_steps([{"step": 0, "layer": "", "map": "", "score": "",
                                "accuracy": f"{self.base_accuracy:.8f}", "params": self.base_params,
                                "macs": self.base_macs, "seconds": "0.000"}])
        self.dir.logger().info(f"{self.criterion.display_name}| Test accuracy {self.base_accuracy:.8f}, pruned: 0")
        if self.on_step is not None:   # curves (TensorBoard, progress) start at the base model
            self.on_step(StepRecord(0, [], self.base_accuracy, self.base_params, self.base_macs, 0.0),
                         self.total_steps() or 0)
        return False

    def _check_feasible(self, accuracy: float) -> None:
        """Refuse, before anything is written, a floor the base model is already under and a size
        target below the smallest model the scope can reach."""
        cfg = self.config
        if cfg.min_accuracy is not None and accuracy < cfg.min_accuracy:
            raise PruningError(f"--min-accuracy {cfg.min_accuracy} is above the base model's {cfg.eval_split} "
                               f"accuracy {accuracy:.4f}: nothing can be pruned; lower it")
        targets = [("params", cfg.target_params, self.base_params), ("macs", cfg.target_macs, self.base_macs)]
        if all(t is None for _, t, _ in targets):
            return
        smallest = dict(zip(("params", "macs"), smallest_size(self.graph, self.scope, cfg.rounding)))
        for name, target, base in targets:
            if target is not None and target * base < smallest[name]:
                per_group = "one map" if cfg.rounding == 1 else f"--round-to {cfg.rounding} maps"
                raise PruningError(f"--target-{name} {target} ({int(target * base):,} {name}) is below the smallest "
                                   f"model scope {cfg.scope!r} can reach ({smallest[name]:,} {name}, {per_group} per "
                                   "layer); raise it or widen --scope")

    def _latencies(self) -> dict:
        """Predicted and measured milliseconds of the base and the pruned model (each timed on its
        own with the table's runtime, batch, clock and repeats; the median, as in the table)."""
        t = self.latency
        base_model, base_graph = self.base.build_traced(self.config.ignore)
        measured = {}
        for name, model, graph in (("base", base_model, base_graph), ("final", self.model, self.graph)):
            seconds = measure_model(model, graph, t.runtime, t.batch, t.device, t.repeats, clock=t.clock)
            measured[name] = 1000 * statistics.median(seconds)
        return {"runtime": t.runtime, "batch": t.batch, "device": t.device, "clock": t.clock,
                "base_predicted_ms": t.predict(base_graph), "final_predicted_ms": t.predict(self.graph),
                "base_measured_ms": measured["base"], "final_measured_ms": measured["final"],
                "table_noise": t.noise()[0], "table": t.path, "round_to": self.config.rounding,
                "round_to_chosen": self.config.round_to is None}

    def _load_state(self) -> None:
        try:
            state = torch.load(self.dir.state_path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise FmpruneError(f"{self.dir.state_path}: unreadable resume state ({type(e).__name__}); delete it "
                               "to start the run over, or use another --run-dir") from None
        self._restore(state)
        self.elapsed_before = state["elapsed"]
        self.started = time.perf_counter()
        self.dir.truncate_records(state["record_sizes"])

    def _finish(self, base_accuracy: float, accuracy: float, stop_reason: str) -> RunSummary:
        elapsed = self.elapsed_before + time.perf_counter() - self.started
        origin = {"base_checkpoint": self.base_path, "pruning": self.config.to_dict()}
        final = make_checkpoint(self.model, self.base.model_spec, self.graph, data_fingerprint=self.base.data_fingerprint, seed=self.config.seed,
                                accuracies={self.config.eval_split: accuracy}, recipe=self.base.recipe,
                                origin=origin)
        save_checkpoint(final, self.dir.model_path)
        counts = self.graph.sizes()
        traced = {g.name: g.traced_size for g in self.graph.groups}
        summary = RunSummary(
            base_accuracy=base_accuracy, final_accuracy=accuracy, steps=self.step,
            maps_pruned={n: traced[n] - c for n, c in counts.items()}, maps_left=counts,
            base_params=self.base_params, final_params=self.graph.total_params(),
            base_macs=self.base_macs, final_macs=self.graph.total_macs(), stop_reason=stop_reason,
            seconds=elapsed, eval_split=self.config.eval_split,
            extra={"removable": sum(traced[n] - 1 for n in self.scope),
                   **({"accuracy_before_final_tune": self.final_tune_from} if self.config.final_tune else {}),
                   **({"latency": self._latencies()} if self.latency is not None else {})},
        )
        write_json_atomic(self.dir.summary_path, summary.to_dict())
        self.dir.state_path.unlink(missing_ok=True)
        return summary


def run_pruning(checkpoint: Path | str, splits: Splits, config: PruneConfig, run_dir: Path | str,
                on_step: Callable[[StepRecord, int], None] | None = None,
                device: str | torch.device | None = None,
                on_tune: Callable[[int, int, float], None] | None = None,
                distributed: bool = False) -> RunSummary:
    """Prune the model of ``checkpoint`` as ``config`` says, writing everything to ``run_dir``;
    ``device`` (default cpu) is where it computes, recorded in ``config.json`` but not part of the
    configuration: a run may resume on another device. ``distributed``: retraining under DDP in
    a torchrun process group (:mod:`.distributed`); ``run_dir`` is then this rank's."""
    base = load_checkpoint_for(checkpoint, splits)
    with claimed(run_dir, PRUNE_KIND):
        return PruningRun(base, splits, config, run_dir, str(checkpoint), on_step, device, on_tune,
                          distributed).run()


def describe(summary: RunSummary) -> str:
    """One line for a sweep's progress output."""
    return (f"{summary.steps} steps, {summary.eval_split} accuracy {summary.base_accuracy:.4f} -> "
            f"{summary.final_accuracy:.4f}, x{summary.compression:.1f} params, {summary.stop_reason}")


PRUNE = RunMethod(PRUNE_KIND, PruneConfig, run_pruning, describe, step_hook="on_step",
                  example={"criterion": "l1_filter", "steps": 2, "eval_size": 100})
