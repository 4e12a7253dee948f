"""fmprune against Torch-Pruning on the same trained models, data and MAC targets, in one run.

For every model, both libraries prune the same base model, on the same calibration images, down
to each MAC target (2x and 3x fewer MACs by default, the later target continuing from the earlier
one), with steps of about the same size near the targets, and both evaluate the same validation images
after every step. Methods:

- fmprune ``taylor`` + L2 normalisation, and ``l1_filter`` (fmprune's default L2 normalisation),
  through ``fmprune.run_pruning`` (the product path: run directory and all);
- Torch-Pruning (the ``peers`` extra, pinned) ``MagnitudeImportance(p=1)`` ("L1") and
  ``TaylorImportance``, ``MetaPruner`` with global pruning, the classifier ignored, stepping until
  the MACs reach the target (its own example's way to hit a target speed-up).

Then every pruned model gets the same short retraining (Adam, one-cycle, the same batches).
Reported per model and target: MACs and params reduction (counted by ``fmprune.costs`` for both),
validation accuracy without and with retraining, median CPU latency at batch 1 and 32 (all models
of a target timed in turns), median seconds per pruning step (score + remove + evaluate), and the time to build
each library's dependency graph. Models: LeNet (the cached base checkpoint, MNIST), the zoo's
resnet20/resnet56 and torchvision resnet18/mobilenet_v2 on MNIST as 3x32x32 images, trained
briefly here (``--train-iters``, cached; 0 keeps random weights) since CIFAR is not fetched.

    .venv/bin/python benchmarks/peers.py [--quick] [--models lenet,resnet20] [--out peers.json]
"""

from __future__ import annotations

import argparse
import copy
import csv
import importlib.metadata
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import fmprune
from fmprune.run.base_model import default_checkpoint_path
from fmprune.costs import count_macs, count_params, measure_latencies
from fmprune.data import Splits, calibration_subset, fmprune_home, load_splits
from fmprune.distillation import Distillation
from fmprune.models import build_model
from fmprune.models.spec import ModelSpec
from fmprune.run.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from fmprune.tables import markdown_table
from fmprune.training import BatchStream, Recipe, default_recipe, evaluate, fine_tune, train_model

MODELS = {   # name -> (fmprune model name, data)
    "lenet": ("lenet", None),
    "resnet20": ("resnet20", "mnist3x32"),
    "resnet56": ("resnet56", "mnist3x32"),
    "resnet18": ("torchvision:resnet18", "mnist3x32"),
    "mobilenet_v2": ("torchvision:mobilenet_v2", "mnist3x32"),
}
FMPRUNE_METHODS = {"fmprune taylor+l2": ("taylor", "l2"), "fmprune l1_filter": ("l1_filter", "l2")}
TP_METHODS = ("torch-pruning L1", "torch-pruning taylor")


@dataclass
class Pruned:
    """One library's method at one target."""

    method: str
    target: float
    model: nn.Module | None
    steps: int = 0
    step_seconds: list[float] = field(default_factory=list)
    error: str = ""


@dataclass
class Row:
    model: str
    weights: str
    target: str
    method: str
    steps: int
    macs_x: float | None
    params_x: float | None
    accuracy: float | None
    accuracy_retrained: float | None
    latency_ms: float | None
    latency_b32_ms: float | None
    seconds_per_step: float | None
    graph_seconds: float | None
    error: str = ""


# -- base models ---------------------------------------------------------------------------------

def base_checkpoint(name: str, splits: Splits, iters: int, seed: int = 0) -> tuple[Path, str]:
    """The base model's checkpoint and how its weights came about."""
    arch, _ = MODELS[name]
    if arch == "lenet":
        path = default_checkpoint_path(splits, seed)
        if not path.is_file():
            raise SystemExit(f"no cached LeNet checkpoint ({path}): run `fmprune train` first")
        return path, "cached base checkpoint (LeNet recipe)"
    spec = ModelSpec(arch, {}, splits.n_classes, tuple(splits.input_shape))
    path = fmprune_home() / "checkpoints" / f"peers-{spec.slug()}-{splits.fingerprint()}-it{iters}-seed{seed}.pt"
    recipe = default_recipe(arch, max_iters=iters, batch_size=64, seed=seed) if iters else None
    cached_base(spec, splits, recipe, path, seed)
    return path, "random weights" if iters == 0 else f"trained here: SGD {iters} iterations, batch 64, cosine"


def cached_base(spec: ModelSpec, splits: Splits, recipe: Recipe | None, path: Path, seed: int = 0) -> Path:
    """``spec`` trained on ``splits`` with ``recipe`` (None: random weights from ``seed``), saved
    at ``path`` the first time and read from there afterwards: benchmarks compare pruning, so
    every run of them starts from the same base weights."""
    if path.is_file():
        return path
    if recipe is None:
        torch.manual_seed(seed)
        model, recipe_dict = build_model(spec), {}
    else:
        trained = train_model(spec, splits, recipe)
        model, spec, recipe_dict = trained.model, trained.spec, trained.recipe
    ckpt = make_checkpoint(model.eval(), spec, data_fingerprint=splits.fingerprint(), seed=seed,
                           accuracies={"val": evaluate(model, splits.val)}, recipe=recipe_dict)
    return save_checkpoint(ckpt, path)


# -- the two libraries -----------------------------------------------------------------------------

def fmprune_prune(ckpt: Path, splits: Splits, method: str, targets: list[float], args, workdir: Path) -> list[Pruned]:
    """``run_pruning`` to each target in turn, each run continuing from the previous one's model."""
    criterion, normalize = FMPRUNE_METHODS[method]
    base_macs = load_checkpoint(ckpt).build_traced()[1].total_macs()
    out, source, steps, durations = [], ckpt, 0, []
    for i, target in enumerate(targets):
        now = load_checkpoint(source).build_traced()[1].total_macs()
        config = fmprune.PruneConfig(criterion=criterion, normalize=normalize, target_macs=min(1.0, target * base_macs / now),
                                     maps_per_step=args.fraction, calibration=args.calibration,
                                     eval_size=args.eval_size, seed=0)
        run_dir = workdir / f"{method.replace(' ', '-').replace('+', '-')}-{i}"
        summary = fmprune.run_pruning(source, splits, config, run_dir)
        steps += summary.steps
        durations += step_durations(run_dir / "steps.csv")
        out.append(Pruned(method, target, load_checkpoint(run_dir / "model.pt").build().eval(), steps, list(durations)))
        source = run_dir / "model.pt"
    return out


def step_durations(steps_csv: Path) -> list[float]:
    """Seconds each step of a run took (its ``steps.csv`` records elapsed time at every step)."""
    with open(steps_csv, newline="") as f:
        elapsed = {int(r["step"]): float(r["seconds"]) for r in csv.DictReader(f)}
    return [elapsed[k] - elapsed[k - 1] for k in sorted(elapsed) if k > 0]


def classifier(model: nn.Module) -> nn.Module:
    """The output layer: the last Linear (never pruned, by either library)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def tp_prune(base: nn.Module, splits: Splits, method: str, targets: list[float], args) -> list[Pruned]:
    """Torch-Pruning's MetaPruner stepped until the MACs reach each target in turn."""
    import torch_pruning as tp

    model = copy.deepcopy(base).eval()
    example = torch.zeros(1, *splits.input_shape)
    taylor = method.endswith("taylor")
    importance = tp.importance.TaylorImportance() if taylor else tp.importance.MagnitudeImportance(p=1)
    steps_max = tp_steps(args.fraction)
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, global_pruning=True, pruning_ratio=0.9,
                                  iterative_steps=steps_max, ignored_layers=[classifier(model)])
    calib = calibration_subset(splits.train, args.calibration, 0)
    val = splits.val.subset(args.eval_size)
    base_macs = count_macs(model, example)
    out, step, seconds = [], 0, []
    for target in targets:
        while count_macs(model, example) > target * base_macs and step < steps_max:
            start = time.perf_counter()
            if taylor:
                model.zero_grad()
                F.cross_entropy(model(calib.images), calib.labels).backward()
            pruner.step()
            model.zero_grad(set_to_none=True)
            evaluate(model, val)   # as fmprune's loop does after every step
            seconds.append(time.perf_counter() - start)
            step += 1
        reached = count_macs(model, example) <= target * base_macs
        out.append(Pruned(method, target, copy.deepcopy(model).eval(), step, list(seconds),
                          "" if reached else f"stopped at {steps_max} steps before the target"))
    return out


def tp_steps(fraction: float) -> int:
    """Torch-Pruning's step count for a 0.9 ratio: fmprune removes a fraction of the maps *left*
    per step, its linear schedule a fraction of the original ones; half of it keeps its steps no
    coarser near the targets (where ~60 % are left)."""
    return max(2, round(0.9 / (fraction / 2)))


def graph_seconds(model: nn.Module, input_shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Median time to build each library's dependency graph of the base model."""
    import torch_pruning as tp

    example = torch.zeros(1, *input_shape)
    times: dict[str, list[float]] = {"fmprune": [], "torch-pruning": []}
    for _ in range(repeats):
        for name, build in (("fmprune", lambda m: fmprune.trace(m, example)),
                            ("torch-pruning", lambda m: tp.DependencyGraph().build_dependency(m, example_inputs=example))):
            m = copy.deepcopy(model)
            start = time.perf_counter()
            build(m)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def retrained(model: nn.Module, splits: Splits, iters: int, seed: int = 0,
              distill: Distillation | None = None) -> nn.Module:
    """The same short retraining for every pruned model: Adam, one-cycle, the same batches (a
    copy: the model itself is left as it is)."""
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    one_cycle(model, BatchStream(splits.train, 64, seed), iters, distill=distill)
    return model.eval()


def one_cycle(model: nn.Module, stream: BatchStream, iters: int, lr: float = 1e-3,
              distill: Distillation | None = None) -> None:
    """``iters`` updates of a fresh Adam with a one-cycle schedule peaking at ``lr``, in place:
    a new optimizer each time, because Torch-Pruning replaces the parameters it prunes (an
    optimizer made before a step would update the old ones). ``distill``: learn from a teacher's
    output too (``fmprune.Distillation``)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=iters, pct_start=0.15)
    fine_tune(model, stream, optimizer, iters, schedule, distill=distill)


# -- one model -------------------------------------------------------------------------------------

def bench_model(name: str, args, log: Callable[[str], None]) -> list[Row]:
    _, data = MODELS[name]
    splits = cached_splits(data)
    ckpt, weights = base_checkpoint(name, splits, args.train_iters)
    base = load_checkpoint(ckpt).build().eval()
    shape = tuple(splits.input_shape)
    example = torch.zeros(1, *shape)
    val = splits.val.subset(args.eval_size)
    base_acc = evaluate(base, val)
    weights += f", val accuracy {base_acc:.4f} on {len(val)} images"
    log(f"{name}: {weights}; {count_params(base):,} params, {count_macs(base, example):,} MACs")
    graphs = graph_seconds(base, shape, args.graph_repeats)
    results: list[Pruned] = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in FMPRUNE_METHODS:
            results += _guard(method, args.targets, lambda: fmprune_prune(ckpt, splits, method, args.targets, args,
                                                                           Path(tmp)))
            log(f"  {method} done")
    for method in TP_METHODS:
        results += _guard(method, args.targets, lambda: tp_prune(base, splits, method, args.targets, args))
        log(f"  {method} done")
    rows = [Row(name, weights, "base", "base model", 0, 1.0, 1.0, base_acc, None, None, None, None, None)]
    for target in args.targets:
        mine = [p for p in results if p.target == target]
        alive = [p for p in mine if p.model is not None]
        models = [base] + [p.model for p in alive]
        latencies = measure_latencies(models, shape, 1, args.latency_repeats)
        batched = measure_latencies(models, shape, 32, max(3, args.latency_repeats // 3))
        rows[0].latency_ms = rows[0].latency_ms or latencies[0] * 1e3
        rows[0].latency_b32_ms = rows[0].latency_b32_ms or batched[0] * 1e3
        latency = {id(p): (t, b) for p, t, b in zip(alive, latencies[1:], batched[1:])}
        for p in mine:
            if p.model is None:
                rows.append(Row(name, weights, f"{1 / target:.0f}x", p.method, 0, None, None, None, None, None, None,
                                None, None, p.error))
                continue
            acc = evaluate(p.model, val)
            acc_rt = evaluate(retrained(p.model, splits, args.retrain), val) if args.retrain else None
            lib = "fmprune" if p.method.startswith("fmprune") else "torch-pruning"
            rows.append(Row(name, weights, f"{1 / target:.0f}x", p.method, p.steps,
                            count_macs(base, example) / count_macs(p.model, example),
                            count_params(base) / count_params(p.model), acc, acc_rt, latency[id(p)][0] * 1e3,
                            latency[id(p)][1] * 1e3,
                            statistics.median(p.step_seconds) if p.step_seconds else None, graphs[lib], p.error))
    return rows


_splits: dict[str | None, Splits] = {}


def cached_splits(data: str | None) -> Splits:
    """Each data set loaded once for all its models (MNIST as 3x32x32 is ~0.7 GB)."""
    if data not in _splits:
        _splits[data] = load_splits(data)
    return _splits[data]


def _guard(method: str, targets: list[float], prune: Callable[[], list[Pruned]]) -> list[Pruned]:
    """A library that fails on a model gets an error row instead of ending the benchmark."""
    try:
        return prune()
    except Exception as e:   # noqa: BLE001 - a peer's failure on a model is a result too
        message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
        return [Pruned(method, t, None, error=message) for t in targets]


# -- output ----------------------------------------------------------------------------------------

def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[Row], args) -> str:
    head = ["model", "target", "method", "steps", "MACs x", "params x", "val acc", f"acc after {args.retrain} it",
            "ms b=1", "ms b=32", "s/step", "graph s"]
    cells = [[r.model, r.target, r.method + (f" ({r.error})" if r.error else ""), str(r.steps) if r.steps else "-",
              fmt(r.macs_x, ".2f"), fmt(r.params_x, ".2f"), fmt(r.accuracy, ".4f"),
              fmt(r.accuracy_retrained, ".4f"), fmt(r.latency_ms, ".2f"), fmt(r.latency_b32_ms, ".1f"),
              fmt(r.seconds_per_step, ".3f"), fmt(r.graph_seconds, ".3f")] for r in rows]
    weights = dict.fromkeys(f"- {r.model}: {r.weights}" for r in rows)
    table = markdown_table([dict(zip(head, row)) for row in cells], text_columns=3)
    return "\n".join([table, "", "Base models:", *weights])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--targets", default="2,3", help="MAC reductions to reach, in increasing order (default 2,3)")
    ap.add_argument("--quick", action="store_true", help="smoke-sized: few images, iterations and repeats")
    ap.add_argument("--eval-size", type=int, default=None, help="validation images (default 300, quick 100)")
    ap.add_argument("--calibration", type=int, default=None, help="training images scored (default 64, quick 32)")
    ap.add_argument("--fraction", type=float, default=None, help="maps per step, a fraction (default 0.1, quick 0.2)")
    ap.add_argument("--retrain", type=int, default=None, help="retraining iterations (default 30, quick 5; 0: none)")
    ap.add_argument("--train-iters", type=int, default=None,
                    help="SGD iterations for the mnist3x32 base models (default 100, quick 20; 0: random weights)")
    ap.add_argument("--latency-repeats", type=int, default=None, help="timed forwards at batch 1 (default 10, "
                    "quick 3; a third of them at batch 32)")
    ap.add_argument("--graph-repeats", type=int, default=None, help="graph builds timed (default 3, quick 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared machine more threads wait on each other)")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    quick = args.quick
    for key, full, small in (("eval_size", 300, 100), ("calibration", 64, 32), ("fraction", 0.1, 0.2),
                             ("retrain", 30, 5), ("train_iters", 100, 20), ("latency_repeats", 10, 3),
                             ("graph_repeats", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, small if quick else full)
    args.targets = [1 / float(t) for t in args.targets.split(",")]
    torch.set_num_threads(args.threads)
    versions = {p: importlib.metadata.version(p) for p in ("fmprune", "torch-pruning", "torch")}
    print(f"versions: {versions}; {args.threads} thread(s); {'QUICK mode: not results' if quick else 'full mode'}",
          flush=True)
    start = time.perf_counter()
    rows = []
    for name in args.models.split(","):   # each model's table as soon as it is done: a long run keeps its part
        mine = bench_model(name, args, lambda s: print(s, flush=True))
        rows += mine
        print(f"\n{markdown(mine, args)}\n", flush=True)
        if args.out:
            args.out.write_text(json.dumps({"versions": versions, "args": {k: v for k, v in vars(args).items()
                                                                           if k != "out"},
                                            "rows": [asdict(r) for r in rows]}, indent=1, default=str))
    if len(args.models.split(",")) > 1:
        print(markdown(rows, args))
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
