"""Pruning quality on Fashion-MNIST: fmprune's criteria and Torch-Pruning's importances, same budget.

MNIST leaves every method at ~99 %, so it cannot tell them apart; Fashion-MNIST has the same
format and leaves room. For every base model, seed, and method, the pruned model goes down to
each MAC target (2x and 3x fewer MACs by default; the later continues from the earlier) in
``--rounds`` rounds per target with the same retraining after every round, then gets the same
final retraining; accuracy is measured on all 10,000 test images. Everything but the pruning
decisions is shared by all methods:

- the base model (trained once, cached under the fmprune home; LeNet on 1x28x28, the zoo models
  on the 3x32x32 presentation ``fashion-mnist3x32``);
- per seed: the calibration images a data-driven criterion reads, the retraining batches;
- retraining: ``--retrain-during`` updates after every pruning round (but the last), and
  ``--retrain`` updates of the final tuning, each a fresh Adam with a one-cycle schedule peaking
  at 1e-3, batch 64 (``peers.one_cycle``), on the same batch stream;
- step sizes: fmprune removes ``--fraction`` of the maps left per step, Torch-Pruning's linear
  schedule half of that fraction of the original channels (``peers.tp_steps``), both evaluating
  the same ``--eval-size`` validation images after every step.

Methods: fmprune's criteria through ``fmprune.run_pruning`` (taylor with L2 normalisation and
without, weight_grad, taylor_bn, l1_filter, slimming, random; the others with fmprune's default L2
normalisation), and Torch-Pruning 1.6.1's MagnitudeImportance (p=1 "L1", p=2 "L2"),
TaylorImportance, BNScaleImportance and LAMPImportance with their defaults, under MetaPruner with
global pruning and the classifier ignored. A method a model cannot take (BatchNorm criteria on
LeNet) gets an error row.

    .venv/bin/python benchmarks/quality.py --quick
    .venv/bin/python benchmarks/quality.py --models lenet --seeds 0,1,2 --out benchmarks/results/quality-lenet.json
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

import fmprune
from fmprune.costs import count_macs, count_params
from fmprune.data import Splits, calibration_subset, fmprune_home
from fmprune.distillation import Distillation
from fmprune.models.spec import ModelSpec
from fmprune.run.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from fmprune.tables import markdown_table
from fmprune.training import BatchStream, default_recipe, evaluate

from peers import cached_base, cached_splits, classifier, fmt, one_cycle, retrained, step_durations, tp_steps

MODELS = {   # name -> (architecture, data it is trained and pruned on)
    "lenet": ("lenet", "fashion-mnist"),
    "resnet20": ("resnet20", "fashion-mnist3x32"),
    "resnet56": ("resnet56", "fashion-mnist3x32"),
    "vgg11_bn": ("vgg11_bn", "fashion-mnist3x32"),
    "mobilenetv2": ("mobilenetv2", "fashion-mnist3x32"),
    "lenet-mnist": ("lenet", "mnist"),   # the thesis' setting: that nothing regresses there
}
FMPRUNE_METHODS = {   # label -> (criterion, normalisation[, per-cost[, λ of the FLOPs term, eq. 9]]); "fmprune taylor+rms" is the default recipe
    "fmprune taylor+l2": ("taylor", "l2"),
    "fmprune taylor+rms": ("taylor", "rms"),
    "fmprune taylor+rms/macs": ("taylor", "rms", "macs"),
    "fmprune taylor+mean": ("taylor", "mean"),
    "fmprune taylor+lamp": ("taylor", "lamp"),
    "fmprune taylor+rms+flops0.1": ("taylor", "rms", "none", 0.1),
    "fmprune taylor+rms+flops0.3": ("taylor", "rms", "none", 0.3),
    "fmprune taylor+rms+flops0.6": ("taylor", "rms", "none", 0.6),
    "fmprune taylor+rms+flops1": ("taylor", "rms", "none", 1.0),
    "fmprune l1_filter+rms": ("l1_filter", "rms"),
    "fmprune l1_filter+rms/macs": ("l1_filter", "rms", "macs"),
    "fmprune taylor": ("taylor", "none"),
    "fmprune weight_grad": ("weight_grad", "l2"),
    "fmprune taylor_bn": ("taylor_bn", "l2"),
    "fmprune l1_filter": ("l1_filter", "l2"),
    "fmprune slimming": ("slimming", "l2"),
    "fmprune random": ("random", "l2"),
}
TP_METHODS: dict[str, Callable[[], object]] = {   # label -> Torch-Pruning importance, its defaults
    "tp L1": lambda: _tp().importance.MagnitudeImportance(p=1),
    "tp L2": lambda: _tp().importance.MagnitudeImportance(p=2),
    "tp taylor": lambda: _tp().importance.TaylorImportance(),
    "tp bn_scale": lambda: _tp().importance.BNScaleImportance(),
    "tp lamp": lambda: _tp().importance.LAMPImportance(),
}
QUICK = {"models": "lenet,resnet20", "methods": "fmprune taylor+rms,fmprune taylor+l2,tp L1,tp taylor",
         "seeds": "0", "base_iters": 300, "rounds": 1, "retrain_during": 20, "retrain": 60, "fraction": 0.2,
         "calibration": 64, "eval_size": 300, "distill": 0.5}
FULL = {"models": ",".join(MODELS), "methods": ",".join([*FMPRUNE_METHODS, *TP_METHODS]), "seeds": "0,1,2",
        "base_iters": 2200, "rounds": 2, "retrain_during": 100, "retrain": 600, "fraction": 0.05,
        "calibration": 256, "eval_size": 1000, "distill": 0.5}


def _tp():
    import torch_pruning   # benchmarks only: fmprune itself never imports it

    return torch_pruning


# -- base models ---------------------------------------------------------------------------------

def base_recipe(arch: str, iters: int):
    """LeNet's own recipe (Adam, one-cycle, batch 100); the zoo's SGD recipe (Nesterov, cosine
    from 0.1, weight decay 5e-4, the data's normalisation in front), batch 64; both cut to
    ``iters`` updates with the schedule ending there."""
    if arch == "lenet":
        return default_recipe(arch, max_iters=iters, seed=0)
    return default_recipe(arch, max_iters=iters, batch_size=64, seed=0)


def base_checkpoint(arch: str, splits: Splits, iters: int) -> Path:
    """The base model, trained once and cached (seed 0: the pruning seeds vary, the base does not)."""
    spec = ModelSpec(arch, {}, splits.n_classes, tuple(splits.input_shape))
    path = fmprune_home() / "checkpoints" / f"quality-{spec.slug()}-{splits.fingerprint()}-it{iters}-seed0.pt"
    return cached_base(spec, splits, base_recipe(arch, iters), path)


# -- the two libraries, behind one interface -----------------------------------------------------

class Chain(Protocol):
    """A model being pruned step by step; retraining happens outside, on ``model``, in place."""

    model: nn.Module
    steps: int
    step_seconds: list[float]

    def prune_to(self, macs: int) -> None: ...

    def retrained_in_place(self) -> None: ...


class FmpruneChain:
    """``fmprune.run_pruning`` once per round, each run starting from the previous round's model
    (saved as a checkpoint after the shared retraining)."""

    def __init__(self, ckpt: Path, splits: Splits, method: str, args, seed: int, workdir: Path) -> None:
        spec = FMPRUNE_METHODS[method]
        self.criterion, self.normalize = spec[:2]
        self.per_cost = spec[2] if len(spec) > 2 else "none"
        self.flops_lambda = spec[3] if len(spec) > 3 else 0.0
        self.splits, self.args, self.seed, self.workdir = splits, args, seed, workdir
        self.base = load_checkpoint(ckpt)
        self.source = ckpt
        self.model, self.graph = self.base.build_traced()
        self.steps, self.step_seconds, self.rounds = 0, [], 0

    def prune_to(self, macs: int) -> None:
        config = fmprune.PruneConfig(criterion=self.criterion, normalize=self.normalize, per_cost=self.per_cost,
                                     flops_lambda=self.flops_lambda,
                                     target_macs=min(1.0, macs / self.graph.total_macs()),
                                     maps_per_step=self.args.fraction, calibration=self.args.calibration,
                                     eval_size=self.args.eval_size, seed=self.seed)
        run_dir = self.workdir / f"round-{self.rounds}"
        self.rounds += 1
        summary = fmprune.run_pruning(self.source, self.splits, config, run_dir)
        self.steps += summary.steps
        self.step_seconds += step_durations(run_dir / "steps.csv")
        if summary.final_macs > macs:
            raise RuntimeError(f"stopped at {summary.final_macs:,} MACs ({summary.stop_reason})")
        self.source = run_dir / "model.pt"
        self.model, self.graph = load_checkpoint(self.source).build_traced()

    def retrained_in_place(self) -> None:
        ckpt = make_checkpoint(self.model, self.base.model_spec, self.graph, data_fingerprint=self.base.data_fingerprint,
                               recipe=self.base.recipe)
        self.source = save_checkpoint(ckpt, self.workdir / f"round-{self.rounds - 1}-retrained.pt")


class TorchPruningChain:
    """Torch-Pruning's MetaPruner (global pruning, classifier ignored) stepped until the MACs reach
    each target; every step scores, removes and evaluates, as fmprune's steps do."""

    def __init__(self, base: nn.Module, splits: Splits, method: str, args, seed: int) -> None:
        tp = _tp()
        self.model = copy.deepcopy(base).eval()
        self.example = torch.zeros(1, *splits.input_shape)
        self.importance = TP_METHODS[method]()
        self.needs_grad = isinstance(self.importance, tp.importance.TaylorImportance)
        self.steps_max = tp_steps(args.fraction)
        self.pruner = tp.pruner.MetaPruner(self.model, self.example, importance=self.importance, global_pruning=True,
                                           pruning_ratio=0.9, iterative_steps=self.steps_max,
                                           ignored_layers=[classifier(self.model)])
        self.calibration = calibration_subset(splits.train, args.calibration, seed)
        self.val = splits.val.subset(args.eval_size)
        self.steps, self.step_seconds = 0, []

    def prune_to(self, macs: int) -> None:
        while (now := count_macs(self.model, self.example)) > macs:
            if self.steps >= self.steps_max:
                raise RuntimeError(f"stopped at {self.steps_max} steps before the target ({now:,} MACs)")
            start = time.perf_counter()
            if self.needs_grad:
                self.model.zero_grad()
                F.cross_entropy(self.model(self.calibration.images), self.calibration.labels).backward()
            self.pruner.step()
            self.model.zero_grad(set_to_none=True)
            evaluate(self.model, self.val)
            self.step_seconds.append(time.perf_counter() - start)
            self.steps += 1   # a step may remove nothing (its schedule is already met): it still counts

    def retrained_in_place(self) -> None:
        """Torch-Pruning prunes the live model: nothing to save."""


# -- one method, one seed ------------------------------------------------------------------------

@dataclass
class Result:
    model: str
    target: str
    method: str
    seed: int
    steps: int = 0
    macs_x: float | None = None
    params_x: float | None = None
    acc_pruned: float | None = None      # test accuracy at the target, before the final tuning
    acc_tuned: float | None = None       # ... and after it
    val_tuned: float | None = None       # after it, on the whole validation split: what a method's
                                         # settings may be chosen by (the test split only reports)
    seconds_per_step: float | None = None
    wall_seconds: float | None = None    # pruning, retraining and final tuning (not the test evaluations)
    widths: dict[str, int] | None = None   # maps left in each convolution and linear layer
    error: str = ""


def round_targets(start: float, end: float, rounds: int) -> list[float]:
    """MAC fractions from ``start`` down to ``end`` in ``rounds`` equal ratios (the last is ``end``)."""
    return [start * (end / start) ** ((i + 1) / rounds) for i in range(rounds)]


def run_chain(name: str, make: Callable[[], Chain], base: nn.Module, splits: Splits, method: str, seed: int,
              args) -> list[Result]:
    """One method and seed through every target: rounds of pruning, the shared retraining after
    each, the shared final tuning of a copy at each target; a failure ends the chain with error
    rows for the targets not reached."""
    example = torch.zeros(1, *splits.input_shape)
    base_macs, base_params = count_macs(base, example), count_params(base)
    torch.manual_seed(seed)
    stream = BatchStream(splits.train, 64, seed)
    results, previous, busy = [], 1.0, 0.0
    teacher = Distillation.of(base, args.distill) if args.distill else None
    try:
        chain = make()
    except Exception as e:   # noqa: BLE001 - a method a model cannot take is a result too
        return [Result(name, label(t), method, seed, error=short(e)) for t in args.targets]
    for target in args.targets:
        row = Result(name, label(target), method, seed)
        results.append(row)
        try:
            started = time.perf_counter()
            for i, fraction in enumerate(round_targets(previous, target, args.rounds)):
                chain.prune_to(int(fraction * base_macs))
                if i < args.rounds - 1 and args.retrain_during:
                    one_cycle(chain.model, stream, args.retrain_during, distill=teacher)
                    chain.retrained_in_place()
            pruned = copy.deepcopy(chain.model).eval()
            tuned = retrained(pruned, splits, args.retrain, seed, teacher) if args.retrain else pruned
            busy += time.perf_counter() - started
        except Exception as e:   # noqa: BLE001 - a peer's failure on a model is a result too
            row.error = short(e)
            results += [Result(name, label(t), method, seed, error="previous target not reached")
                        for t in args.targets[len(results):]]
            return results
        row.steps, row.wall_seconds = chain.steps, busy
        row.macs_x = base_macs / count_macs(pruned, example)
        row.params_x = base_params / count_params(pruned)
        row.widths = widths(pruned)
        row.acc_pruned, row.acc_tuned = evaluate(pruned, splits.test), evaluate(tuned, splits.test)
        row.val_tuned = evaluate(tuned, splits.val)
        row.seconds_per_step = statistics.median(chain.step_seconds) if chain.step_seconds else None
        if target != args.targets[-1] and args.retrain_during:   # the next target's first round starts retrained
            started = time.perf_counter()
            one_cycle(chain.model, stream, args.retrain_during, distill=teacher)
            chain.retrained_in_place()
            busy += time.perf_counter() - started
        previous = target
    return results


def widths(model: nn.Module) -> dict[str, int]:
    """Output maps of every convolution and linear layer: where a method cut, to compare methods
    that reach the same MACs by different layers."""
    return {name: m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
            for name, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}


def label(target: float) -> str:
    return f"{1 / target:g}x"


def short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:160]


# -- one model -----------------------------------------------------------------------------------

def bench_model(name: str, args, log: Callable[[str], None],
                save: Callable[[list[Result], dict], None]) -> tuple[list[Result], dict]:
    """Every method and seed on one base model; ``save`` gets the rows so far after each chain
    (a long run that is stopped keeps what it measured)."""
    arch, data = MODELS[name]
    splits = cached_splits(data)
    started = time.perf_counter()
    ckpt = base_checkpoint(arch, splits, args.base_iters)
    base = load_checkpoint(ckpt).build().eval()
    example = torch.zeros(1, *splits.input_shape)
    info = {"model": name, "data": data, "checkpoint": str(ckpt), "base_iters": args.base_iters,
            "recipe": load_checkpoint(ckpt).recipe, "test_accuracy": evaluate(base, splits.test),
            "params": count_params(base), "macs": count_macs(base, example),
            "seconds_to_get": time.perf_counter() - started}
    log(f"{name}: base test accuracy {info['test_accuracy']:.4f}, {info['params']:,} params, "
        f"{info['macs']:,} MACs ({info['seconds_to_get']:.0f} s to train or load)")
    results: list[Result] = []
    for method in args.methods:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                make = (lambda: FmpruneChain(ckpt, splits, method, args, seed, Path(tmp))) if method in FMPRUNE_METHODS \
                    else (lambda: TorchPruningChain(base, splits, method, args, seed))
                mine = run_chain(name, make, base, splits, method, seed, args)
            results += mine
            save(results, info)
            log("  " + "; ".join(f"{method} seed {seed} {r.target}: "
                                 + (r.error or f"test {r.acc_pruned:.4f} -> {r.acc_tuned:.4f}") for r in mine))
    return results, info


# -- output ----------------------------------------------------------------------------------------

def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None   # one seed: no spread


def aggregate(results: list[Result]) -> list[dict]:
    """Mean and standard deviation over seeds, per model, target and method."""
    keys = list(dict.fromkeys((r.model, r.target, r.method) for r in results))
    out = []
    for key in keys:
        rows = [r for r in results if (r.model, r.target, r.method) == key]
        ok = [r for r in rows if not r.error]
        agg = {"model": key[0], "target": key[1], "method": key[2], "seeds": len(ok),
               "errors": sorted({r.error for r in rows if r.error})}
        for fieldname in ("macs_x", "params_x", "acc_pruned", "acc_tuned", "val_tuned", "seconds_per_step",
                          "wall_seconds", "steps"):
            agg[fieldname], agg[fieldname + "_std"] = mean_std([getattr(r, fieldname) for r in ok
                                                                if getattr(r, fieldname) is not None])
        out.append(agg)
    return out


def pm(mean: float | None, std: float | None, spec: str, scale: float = 1.0) -> str:
    if mean is None:
        return "-"
    return f"{mean * scale:{spec}} ± {std * scale:{spec}}" if std is not None else f"{mean * scale:{spec}}"


def markdown(rows: list[dict], bases: list[dict], retrain: int) -> str:
    head = ["model", "target", "method", "seeds", "MACs x", "params x", "test acc % pruned",
            f"test acc % after {retrain} it", "steps", "s/step", "wall s"]
    cells = []
    for b in bases:
        cells.append([b["model"], "base", f"trained {b['base_iters']} it", "-", "1.00", "1.00",
                      f"{100 * b['test_accuracy']:.2f}", "-", "-", "-", "-"])
        for r in (r for r in rows if r["model"] == b["model"]):
            method = r["method"] + (f" ({'; '.join(r['errors'])})" if r["errors"] else "")
            cells.append([
                r["model"], r["target"], method, str(r["seeds"]), fmt(r["macs_x"], ".2f"), fmt(r["params_x"], ".2f"),
                pm(r["acc_pruned"], r["acc_pruned_std"], ".2f", 100), pm(r["acc_tuned"], r["acc_tuned_std"], ".2f", 100),
                fmt(r["steps"], ".0f"), fmt(r["seconds_per_step"], ".3f"), fmt(r["wall_seconds"], ".0f")])
    return markdown_table([dict(zip(head, row)) for row in cells], text_columns=3)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
            "versions": {p: importlib.metadata.version(p) for p in ("fmprune", "torch-pruning", "torch")}}


def table_of(paths: list[Path]) -> str:
    """One table of results files, finished or not (a long run saves after every chain): the
    runs of one model split over processes (a method or seed each) read as one. Files that
    retrained differently, or whose base models differ, cannot share a table."""
    saved = [json.loads(p.read_text()) for p in paths]
    retrain = {s["args"]["retrain"] for s in saved}
    distill = {s["args"].get("distill") for s in saved}
    if len(retrain) > 1 or len(distill) > 1:
        raise SystemExit(f"error: these files retrained differently (--retrain {sorted(retrain)}, "
                         f"--distill {sorted(distill, key=str)}); give them one table each")
    bases: dict[str, dict] = {}
    for s, path in zip(saved, paths):
        for b in s["bases"]:
            seen = bases.setdefault(b["model"], b)
            if (seen["checkpoint"], seen["test_accuracy"]) != (b["checkpoint"], b["test_accuracy"]):
                raise SystemExit(f"error: {path} prunes another {b['model']} base model "
                                 f"({100 * b['test_accuracy']:.2f} % against {100 * seen['test_accuracy']:.2f} %)")
    rows = [Result(**r) for s in saved for r in s["rows"]]
    done = f"{len(rows)} rows from {len(paths)} file{'s' * (len(paths) > 1)}, " + \
        " + ".join(f"{s['wall_seconds']:.0f}" for s in saved) + " s"
    return f"{markdown(aggregate(rows), list(bases.values()), retrain.pop())}\n\n{done}"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, nargs="+", help="only print the table of these results files (--out of "
                    "runs; one table for all: e.g. one model's methods run in separate processes) and exit")
    ap.add_argument("--quick", action="store_true", help="a minutes-long subset: " + ", ".join(
        f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    ap.add_argument("--models", help=f"comma-separated, of {', '.join(MODELS)} (default all)")
    ap.add_argument("--methods", help="comma-separated labels (default all): " + ", ".join([*FMPRUNE_METHODS, *TP_METHODS]))
    ap.add_argument("--seeds", help="pruning seeds, comma-separated (default 0,1,2)")
    ap.add_argument("--targets", default="2,3", help="MAC reductions to reach, increasing (default 2,3)")
    ap.add_argument("--base-iters", type=int, help="training updates of each base model (default 2200: LeNet's 4 epochs)")
    ap.add_argument("--rounds", type=int, help="pruning rounds per target, retraining between them (default 2)")
    ap.add_argument("--retrain-during", type=int, help="updates after each round (default 100; 0: none)")
    ap.add_argument("--retrain", type=int, help="updates of the final tuning at each target (default 600, 300 before "
                    "2026-12-02 09:00; 0: none)")
    ap.add_argument("--fraction", type=float, help="fmprune: maps left removed per step (default 0.05, fmprune.prune's own; Torch-Pruning: see peers.tp_steps)")
    ap.add_argument("--distill", type=float, help="weight of distillation from the base model in all retraining "
                    "(fmprune.Distillation, temperature 4; default 0.5; 0: labels only, the protocol before 2026-12-02 09:00)")
    ap.add_argument("--calibration", type=int, help="training images a criterion reads (default 256)")
    ap.add_argument("--eval-size", type=int, help="validation images evaluated after each step (default 1000)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--out", type=Path, help="write per-seed rows, means and the base models as JSON here")
    args = ap.parse_args()
    if args.table:
        return args
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models, args.methods = args.models.split(","), args.methods.split(",")
    for given, known in ((args.models, MODELS), (args.methods, {**FMPRUNE_METHODS, **TP_METHODS})):
        unknown = [g for g in given if g not in known]
        if unknown:
            ap.error(f"unknown {unknown[0]!r}; choose from {', '.join(known)}")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.targets = [1 / float(t) for t in args.targets.split(",")]
    return args


def main() -> None:
    args = parse_args()
    if args.table:
        print(table_of(args.table))
        return
    torch.set_num_threads(args.threads)
    info = machine()
    print(f"{info}; {'QUICK mode' if args.quick else 'full mode'}; started {time.strftime('%Y-%m-%d %H:%M')}",
          flush=True)
    start = time.perf_counter()
    results, bases = [], []

    def save(partial: list[Result], base: dict) -> None:
        if args.out:
            rows, done = results + partial, bases + [base]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({
                "machine": info, "args": {k: v for k, v in vars(args).items() if k != "out"}, "bases": done,
                "means": aggregate(rows), "rows": [asdict(r) for r in rows],
                "wall_seconds": time.perf_counter() - start}, indent=1, default=str))

    for name in args.models:   # each model's table as soon as it is done: a long run keeps its part
        mine, base = bench_model(name, args, lambda s: print(s, flush=True), save)
        results, bases = results + mine, bases + [base]
        print(f"\n{markdown(aggregate(mine), [base], args.retrain)}\n", flush=True)
    if len(args.models) > 1:
        print(markdown(aggregate(results), bases, args.retrain))
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
