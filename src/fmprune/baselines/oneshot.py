"""One-shot pruning (Li et al. 2017's protocol): score every map once, remove them all at once, then
retrain — as opposed to the map-by-map loop of ``fmprune prune``.

How many maps go: a ratio per layer (one for all, per-layer ratios, or those a sensitivity
analysis allows), a global ranking of the raw scores of every map in scope (a ratio of them, or
those under a threshold: network slimming's |γ| rule), or the smallest ratio meeting a size target.
ThiNet prunes layer after layer instead (each layer's next-layer reconstruction is measured on the
model with the earlier layers already pruned, as in the paper) and rescales the kept maps.

:func:`run_oneshot` writes ``config.json``, ``run.log``, ``model.pt``, ``summary.json`` and
``score.json`` (the efficiency score, for ``fmprune report``) to a run directory.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..criteria import create_criterion
from ..criteria.thinet import SAMPLES_PER_IMAGE, check_thinet_scope
from ..data import Split, Splits, calibration_subset
from ..devices import resolve_device
from ..efficiency import save_checkpoint_score, score_checkpoint
from ..errors import FmpruneError, PruningError
from ..validate import check_numbers
from ..run.config import config_from_dict
from ..run.checkpoint import Checkpoint, check_input_shape, load_checkpoint_for, make_checkpoint, save_checkpoint
from ..run.method import RunMethod
from ..run.rundir import (RunDirectory, base_sha256, claimed, held_config, read_summary, run_stamp,
                           write_json_atomic)
from ..training import BatchStream, evaluate, fine_tune
from .plan import (Plan, check_ratio, count_for, format_ratios, global_plan, parse_ratios, per_layer_plan,
                   ratio_for_target)
from .scores import group_scores
from .thinet_rescale import thinet_prune

KIND = "oneshot"   # config.json's "kind": reports and sweeps tell these runs from map-by-map pruning
SEQUENTIAL = {"thinet"}   # criteria that prune layer after layer, each on the already pruned model


@dataclass(frozen=True)
class OneShotConfig:
    """Everything that decides a one-shot run's result (``config.json``). Exactly one of
    ``ratio``, ``ratios``, ``threshold``, ``target_macs``, ``target_params`` says how much goes."""

    criterion: str = "l1_filter"
    ratio: float | None = None            # per layer, or of every map in scope with global_ranking
    ratios: str = ""                      # per layer: "conv1=0.5,conv2=0.3" (layers not named keep all)
    threshold: float | None = None        # global: every map whose raw score is below it
    target_macs: float | None = None      # the smallest ratio leaving at most this fraction of the MACs
    target_params: float | None = None
    global_ranking: bool = False          # rank every map of the scope together by raw score
    scope: str = "all"
    calibration: int = 1000               # training images the criterion reads (data-driven criteria)
    samples_per_image: int = SAMPLES_PER_IMAGE   # ThiNet's sampled next-layer outputs per image
    rescale: bool = True                  # ThiNet's least-squares rescaling of the kept maps
    retrain: int = 0                      # minibatch updates after pruning (one-cycle Adam)
    retrain_lr: float = 1e-3              # its peak learning rate
    retrain_batch: int = 100
    eval_split: str = "val"
    eval_size: int | None = None
    seed: int = 0
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_numbers(self)
        create_criterion(self.criterion)
        given = [k for k in ("ratio", "ratios", "threshold", "target_macs", "target_params") if getattr(self, k)
                 not in (None, "")]
        if len(given) != 1:
            raise FmpruneError("say how much to prune with exactly one of ratio, ratios, threshold, target-macs "
                               f"and target-params (given: {', '.join(given) or 'none'})")
        if self.ratio is not None:
            check_ratio(self.ratio)
        if self.ratios:
            parse_ratios(self.ratios)
        if self.threshold is not None and not self.global_ranking:
            raise FmpruneError("a threshold ranks every map of the scope together: add --global")
        if self.ratios and self.global_ranking:
            raise FmpruneError("per-layer ratios and --global exclude each other")
        if self.criterion in SEQUENTIAL and self.global_ranking:
            raise FmpruneError(f"{self.criterion} ranks the maps of one layer against its next layer; its scores "
                               "do not compare across layers: use per-layer ratios, not --global")
        if self.eval_split not in ("val", "test"):
            raise FmpruneError(f"unknown evaluation split {self.eval_split!r} (available: val, test)")
        for name in ("calibration", "samples_per_image", "retrain_batch", "eval_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FmpruneError(f"{name.replace('_', ' ')} must be positive, got {value}")
        if self.retrain < 0:
            raise FmpruneError(f"retrain iterations must be >= 0, got {self.retrain}")

    def to_dict(self) -> dict:
        return {**asdict(self), "ignore": list(self.ignore)}

    @classmethod
    def from_dict(cls, d: dict) -> "OneShotConfig":
        return config_from_dict(cls, d)


@dataclass
class OneShotSummary:
    criterion: str
    how: str                          # the rule in words, e.g. "per layer: conv1=0.5,conv2=0.3"
    eval_split: str
    base_accuracy: float
    pruned_accuracy: float            # right after pruning, before retraining
    final_accuracy: float
    maps_before: dict[str, int]
    maps_after: dict[str, int]
    removed: dict[str, list[int]]     # maps removed per group (original numbering)
    base_params: int
    final_params: int
    base_macs: int
    final_macs: int
    retrain: int
    seconds: float

    def to_dict(self) -> dict:
        return {**asdict(self), "compression": self.base_params / self.final_params,
                "mac_reduction": self.base_macs / self.final_macs}


class OneShotRun:
    """One one-shot run bound to its run directory; :meth:`run` executes it."""

    def __init__(self, base: Checkpoint, base_path: str, splits: Splits, config: OneShotConfig,
                 run_dir: Path | str, device: str | torch.device | None = None,
                 on_tune: Callable[[int, int, float], None] | None = None) -> None:
        self.base, self.base_path, self.splits, self.config = base, base_path, splits, config
        self.device = resolve_device(device)
        self.on_tune = on_tune
        check_input_shape(base, splits)
        self.criterion = create_criterion(config.criterion)
        model, self.graph = base.build_traced(config.ignore)
        self.model = model.to(self.device)   # in place: the graph's modules are the model's
        self.scope = self.graph.scope(config.scope)
        if config.ratios:
            for name in parse_ratios(config.ratios):
                if name not in self.scope:
                    self.graph.group(name)   # unknown or unprunable: one line naming the groups
                    raise FmpruneError(f"ratios name {name!r}, which is outside --scope {config.scope!r}")
        self.calibration = calibration_subset(splits.train, config.calibration, config.seed).to(self.device)
        self.dir_path = Path(run_dir)
        self._check_run_dir()

    def _check_run_dir(self) -> None:
        self.base_sha = base_sha256(self.base_path)
        held = held_config(self.dir_path, KIND, self.config, self.base_sha)
        self.finished = held is not None and (self.dir_path / "summary.json").is_file()   # run again: its result again

    # -- deciding
    def _scores(self) -> dict[str, torch.Tensor]:
        return group_scores(self.graph, self.criterion, self.calibration, self.scope, self.config.seed)

    def _ratio(self, scores: dict[str, torch.Tensor]) -> tuple[float | None, str]:
        """The uniform (or global) ratio to prune at, and the rule in words."""
        cfg = self.config
        where = "of the scope's maps, ranked together" if cfg.global_ranking else "per layer"
        if cfg.ratio is not None:
            return cfg.ratio, f"{cfg.ratio:g} {where}"
        for measure, target in (("macs", cfg.target_macs), ("params", cfg.target_params)):
            if target is not None:
                ratio = ratio_for_target(self.graph, scores, target, measure, cfg.global_ranking)
                return ratio, f"{ratio:g} {where} (the smallest leaving at most {target:g} of the {measure})"
        return None, ""

    def plan(self, scores: dict[str, torch.Tensor]) -> tuple[Plan, str]:
        """The maps to remove per group (current numbering) and the rule in words."""
        cfg = self.config
        if cfg.ratios:
            ratios = parse_ratios(cfg.ratios)
            return per_layer_plan(scores, ratios), f"per layer: {format_ratios(ratios)}"
        if cfg.threshold is not None:
            return global_plan(scores, threshold=cfg.threshold), f"every map scoring under {cfg.threshold:g}"
        ratio, how = self._ratio(scores)
        if cfg.global_ranking:
            return global_plan(scores, ratio), how
        return per_layer_plan(scores, {n: ratio for n in scores}), how

    # -- pruning: each returns the maps removed per group (original numbering), the rule in words
    # and what to log
    def _prune_at_once(self) -> tuple[dict[str, list[int]], str, list[str]]:
        plan, how = self.plan(self._scores())
        removed, notes = {}, []
        for name, maps in plan.items():
            if maps:
                original = self.graph.alive(name)
                removed[name] = [original[j] for j in maps]
                self.graph.remove(name, maps)
                notes.append(f"{name}: {len(maps)} of {len(original)} maps removed")
        return removed, how, notes

    def _prune_sequentially(self) -> tuple[dict[str, list[int]], str, list[str]]:
        """ThiNet: layer after layer, counts from the per-layer ratios measured on the unpruned model."""
        cfg = self.config
        sizes = {name: self.graph.group(name).size for name in self.scope}
        if cfg.ratios:
            ratios, how = parse_ratios(cfg.ratios), f"per layer: {cfg.ratios}"
        else:
            ones = {name: torch.zeros(size) for name, size in sizes.items()}   # sizes are all a target needs
            ratio, how = self._ratio(ones)
            ratios = {name: ratio for name in sizes}
        counts = {name: count_for(sizes[name], ratios.get(name, 0.0)) for name in self.scope}
        check_thinet_scope(self.graph, [name for name in self.scope if counts[name]])   # before any is pruned
        removed, notes = {}, []
        for name in self.scope:
            n = counts[name]
            if n == 0:
                continue
            original = self.graph.alive(name)
            result = thinet_prune(self.graph, name, n, self.calibration, cfg.samples_per_image, cfg.seed, cfg.rescale)
            removed[name] = [original[j] for j in result.removed]
            notes.append(f"{name}: {n} of {sizes[name]} maps removed, next-layer reconstruction error "
                         f"{result.error_before:.6g}" + (f" -> {result.error_after:.6g} after rescaling" if cfg.rescale else ""))
        return removed, how, notes

    def _retrain(self) -> None:
        cfg = self.config
        optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.retrain_lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.retrain_lr, total_steps=cfg.retrain,
                                                       pct_start=0.15)
        stream = BatchStream(self.splits.train.to(self.device), cfg.retrain_batch, cfg.seed)
        fine_tune(self.model, stream, optimizer, cfg.retrain, schedule, self.on_tune)

    def _write_config(self, rundir: RunDirectory) -> None:
        write_json_atomic(rundir.config_path, {
            **self.config.to_dict(), **run_stamp(KIND, self.base, self.base_path, self.base_sha, self.device)})

    def run(self) -> OneShotSummary:
        if self.finished:
            return read_summary(OneShotSummary, self.dir_path / "summary.json")
        cfg = self.config
        started = time.perf_counter()
        evaluation: Split = getattr(self.splits, cfg.eval_split).subset(cfg.eval_size).to(self.device)
        base_accuracy = evaluate(self.model, evaluation)
        maps_before = self.graph.sizes()
        base_params, base_macs = self.graph.total_params(), self.graph.total_macs()
        torch.manual_seed(cfg.seed)
        prune = self._prune_sequentially if cfg.criterion in SEQUENTIAL else self._prune_at_once
        removed, how, notes = prune()   # bad input fails here, before the run directory is touched
        if not removed:
            raise PruningError(f"nothing to prune: the rule ({how}) removes no map; raise the ratio or the threshold")
        rundir = RunDirectory(self.dir_path)
        rundir.log_path.unlink(missing_ok=True)
        self._write_config(rundir)
        log = rundir.logger()
        name = self.criterion.display_name
        log.info(f"{name}| Test accuracy {base_accuracy:.8f}, pruned: 0")
        for note in notes:
            log.info(f"{name}| {note}")
        pruned_accuracy = accuracy = evaluate(self.model, evaluation)
        log.info(f"{name}| One-shot, {how}: accuracy {base_accuracy:.8f} -> {pruned_accuracy:.8f}, "
                 f"pruned: {sum(len(v) for v in removed.values())}")
        if cfg.retrain:
            self._retrain()
            accuracy = evaluate(self.model, evaluation)
            log.info(f"{name}| Retrained {cfg.retrain} iterations: accuracy {pruned_accuracy:.8f} -> {accuracy:.8f}")
        summary = OneShotSummary(
            criterion=cfg.criterion, how=how, eval_split=cfg.eval_split, base_accuracy=base_accuracy,
            pruned_accuracy=pruned_accuracy, final_accuracy=accuracy, maps_before=maps_before,
            maps_after=self.graph.sizes(), removed=removed, base_params=base_params,
            final_params=self.graph.total_params(), base_macs=base_macs, final_macs=self.graph.total_macs(),
            retrain=cfg.retrain, seconds=time.perf_counter() - started)
        self._save(rundir, summary)
        rundir.close()
        return summary

    def _save(self, rundir: RunDirectory, summary: OneShotSummary) -> None:
        origin = {"base_checkpoint": self.base_path, "oneshot": self.config.to_dict()}
        final = make_checkpoint(self.model.to("cpu"), self.base.model_spec, self.graph,
                                data_fingerprint=self.base.data_fingerprint, seed=self.config.seed,
                                accuracies={self.config.eval_split: summary.final_accuracy},
                                recipe=self.base.recipe, origin=origin)
        save_checkpoint(final, rundir.model_path)
        write_json_atomic(rundir.summary_path, summary.to_dict())
        save_checkpoint_score(rundir.path, rundir.model_path, final, score_checkpoint(final))


def run_oneshot(checkpoint: Path | str, splits: Splits, config: OneShotConfig, run_dir: Path | str,
                device: str | torch.device | None = None,
                on_tune: Callable[[int, int, float], None] | None = None) -> OneShotSummary:
    """Prune the model of ``checkpoint`` once as ``config`` says, retrain, write ``run_dir``."""
    base = load_checkpoint_for(checkpoint, splits)
    with claimed(run_dir, KIND):
        return OneShotRun(base, str(checkpoint), splits, config, run_dir, device, on_tune).run()


def describe(summary: OneShotSummary) -> str:
    """One line for a sweep's progress output."""
    return (f"{summary.criterion} one-shot {summary.how}: {summary.eval_split} accuracy {summary.base_accuracy:.4f} "
            f"-> {summary.pruned_accuracy:.4f} -> {summary.final_accuracy:.4f} after {summary.retrain} iterations, "
            f"x{summary.base_params / summary.final_params:.1f} params, x{summary.base_macs / summary.final_macs:.1f} MACs")


ONESHOT = RunMethod(KIND, OneShotConfig, run_oneshot, describe, example={"ratio": 0.5, "eval_size": 100})
