"""Naive loops vs fmprune's engines on the same models and the same steps, side by side.

LeNet (the chain fast path): for each scope, both loops run the first ``--steps`` steps
(criterion on ``--calibration`` training images, accuracy on the whole validation split after
every step); the script checks that they remove the same maps with the same accuracies and prints
both times and their ratio. ``--full`` also times the whole-network run of every removable map
through ``run_pruning`` (what ``fmprune prune`` does, run directory included) in a process of its
own, prints that process's peak memory, and checks the run against the naive loop on windows at
its start, middle and end.

ResNet-20 (the general path, ``--resnet``): seconds per step of score + remove + evaluate for
one persistent engine against a naive loop that rebuilds the model every step (deep copy of the
base, trace, re-apply every removal so far, score with a fresh engine, remove, evaluate with a
plain forward), on MNIST as 3x32x32 images, for one criterion per way the engine rescores
(``--resnet-criteria``: gradients, activations, weights). Naive and engine steps alternate, so
both see the same load; the script checks they remove the same maps with the same accuracies.

    .venv/bin/python benchmarks/prune_loop.py [--steps 20] [--full] [--resnet] [--scopes '']

Times depend on the machine and on what else runs on it: the load average is printed before and
after; compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

import fmprune
from fmprune.run.base_model import default_checkpoint_path
from fmprune.criteria import create_criterion
from fmprune.data import Split, calibration_subset, load_splits
from fmprune.engine import GraphEngine, create_engine
from fmprune.engine.reference import NaiveLoop
from fmprune.models.spec import ModelSpec, build_model
from fmprune.run.checkpoint import load_checkpoint
from fmprune.run.loop import PruneConfig, run_pruning
from fmprune.training import TrainConfig, evaluate, train


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="LeNet checkpoint (default: the cached base)")
    ap.add_argument("--criterion", default="taylor")
    ap.add_argument("--normalize", default="l2")
    ap.add_argument("--steps", type=int, default=20, help="LeNet steps per scope for both loops")
    ap.add_argument("--scopes", default="all,conv1,conv2,fc1", help="LeNet scopes ('' for none)")
    ap.add_argument("--calibration", type=int, default=1000)
    ap.add_argument("--full", action="store_true", help="also time the whole-network run of all maps")
    ap.add_argument("--window", type=int, default=10, help="naive steps per window of the full run")
    ap.add_argument("--resnet", action="store_true", help="also time the ResNet-20 row")
    ap.add_argument("--resnet-steps", type=int, default=10, help="ResNet-20 steps for both loops")
    ap.add_argument("--resnet-criteria", default="taylor,mean_activation,l1_filter",
                    help="ResNet-20 rows: one criterion per way of rescoring (gradients, activations, weights)")
    ap.add_argument("--resnet-calibration", type=int, default=256)
    ap.add_argument("--resnet-eval", type=int, default=1000, help="ResNet-20 validation images")
    ap.add_argument("--resnet-train", type=int, default=0,
                    help="iterations of brief training of ResNet-20 before pruning (0: random weights)")
    args = ap.parse_args()

    print(f"{load_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.scopes or args.full:
        lenet(args)
    if args.resnet:
        resnet(args)
    print(f"at the end: {load_line()}")


# -- LeNet: the chain fast path
def lenet(args) -> None:
    splits = load_splits()
    path = args.checkpoint or default_checkpoint_path(splits, 0)
    base = load_checkpoint(path)
    calib = calibration_subset(splits.train, args.calibration, 0)
    print(f"checkpoint {path}\n{args.criterion}+{args.normalize}, calibration {len(calib)} training images, "
          f"accuracy on {len(splits.val)} validation images")
    if args.scopes:
        print(f"{'scope':<7}{'steps':>6}{'naive s':>10}{'engine s':>10}{'ratio':>8}  same maps  max |acc diff|")
        totals = [0.0, 0.0]
        for scope in args.scopes.split(","):
            t_naive, t_engine, steps, same, acc_diff = compare_scope(base, splits, calib, scope, args)
            totals[0] += t_naive
            totals[1] += t_engine
            print(f"{scope:<7}{steps:>6}{t_naive:>10.1f}{t_engine:>10.1f}{t_naive / t_engine:>7.1f}x  "
                  f"{'yes' if same else 'NO':<9}  {acc_diff:.1e}")
        print(f"{'total':<13}{totals[0]:>10.1f}{totals[1]:>10.1f}{totals[0] / totals[1]:>7.1f}x")
    if args.full:
        full_run(path, splits, base, calib, args)


def compare_scope(base, splits, calib, scope: str, args) -> tuple[float, float, int, bool, float]:
    model, graph = base.build_traced()
    layers = graph.scope(scope)
    steps = min(args.steps, sum(graph.group(n).size - 1 for n in layers))
    naive = NaiveLoop(model, base.input_shape, create_criterion(args.criterion), splits.val, calib,
                      layers, args.normalize)
    start = time.perf_counter()
    ref = [naive.step(1) for _ in range(steps)]
    t_naive = time.perf_counter() - start

    model, graph = base.build_traced()
    start = time.perf_counter()
    engine = create_engine(graph, create_criterion(args.criterion), splits.val, calib, layers, args.normalize)
    got = []
    for _ in range(steps):
        chosen = engine.select(1)
        engine.remove_selected(chosen)
        got.append((chosen, engine.accuracy()))
    t_engine = time.perf_counter() - start
    same = all([(c.layer, c.original) for c in a] == [(c.layer, c.original) for c in b]
               for (a, _), (b, _) in zip(ref, got))
    acc_diff = max(abs(ra - ga) for (_, ra), (_, ga) in zip(ref, got))
    return t_naive, t_engine, steps, same, acc_diff


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timed_run(path: str, cfg: PruneConfig, run_dir: str) -> tuple[dict, float, float, float]:
    """In a fresh process: load the data and run the loop; (summary, wall s, resident MB before
    the loop, peak resident MB during it). The peak is VmHWM, reset before the loop where the
    kernel allows (``ru_maxrss`` would also count the parent's memory at the fork)."""
    splits = load_splits()
    before = _status_mb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")            # reset the peak to the current resident size
    except OSError:
        pass
    start = time.perf_counter()
    summary = run_pruning(path, splits, cfg, run_dir)
    return summary.to_dict(), time.perf_counter() - start, before, _status_mb("VmHWM")


def full_run(path: str, splits, base, calib, args) -> None:
    """Time the whole-network run of every removable map (what ``fmprune prune`` does) in a
    process of its own (its peak memory is the loop's), then replay its removals in the naive loop
    and time the naive loop on windows at the start, middle and end of the run, checking it makes
    the same choices with the same accuracies. The naive loop masks a dense model, so its cost per
    step is the same at every step: the whole-run naive time is its measured mean per step times
    the number of steps."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PruneConfig(criterion=args.criterion, normalize=args.normalize, calibration=args.calibration)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            summary, wall, rss_before, rss_peak = pool.submit(_timed_run, str(path), cfg, tmp).result()
        with open(f"{tmp}/steps.csv") as f:
            rows = list(csv.DictReader(f))[1:]   # row 0 is the unpruned model
    loop_s = summary["seconds"]
    print(f"\nfull whole-network run: {summary['steps']} steps in {wall:.1f} s (loop {loop_s:.1f} s), "
          f"accuracy {summary['base_accuracy']:.4f} -> {summary['final_accuracy']:.4f}")
    print(f"peak memory of the loop: {rss_peak:.0f} MB resident (VmHWM of the process running it; "
          f"{rss_before:.0f} MB with torch and the data loaded, before the loop)")
    first_steps = [float(r["seconds"]) for r in rows[:3]]
    print("first steps end at " + ", ".join(f"{s:.2f}" for s in first_steps) + " s of the loop")
    steps = {int(r["step"]) for r in rows}
    n, w = max(steps), args.window
    print(f"{'window':<14}{'naive s':>9}{'engine s':>10}{'ratio':>8}  same maps  max |acc diff|")
    per_step = []
    for first in sorted({1, max(1, n // 2 - w // 2), max(1, n - w + 1)}):
        model = base.build()
        naive = NaiveLoop(model, base.input_shape, create_criterion(args.criterion), splits.val, calib,
                          ["conv1", "conv2", "fc1"], args.normalize)
        for r in rows:
            if int(r["step"]) < first:
                naive.remove_original(r["layer"], int(r["map"]))
        window = [r for r in rows if first <= int(r["step"]) < first + w]
        t0 = time.perf_counter()
        got = [naive.step(1) for _ in window]
        t_naive = time.perf_counter() - t0
        before = [r for r in rows if int(r["step"]) == first - 1]
        t_engine = float(window[-1]["seconds"]) - (float(before[-1]["seconds"]) if before else 0.0)
        same = all((c[0].layer, c[0].original) == (r["layer"], int(r["map"])) for (c, _), r in zip(got, window))
        acc_diff = max(abs(a - float(r["accuracy"])) for (_, a), r in zip(got, window))
        per_step.append(t_naive / len(window))
        print(f"{first:>5}-{first + len(window) - 1:<8}{t_naive:>9.1f}{t_engine:>10.2f}{t_naive / t_engine:>7.1f}x  "
              f"{'yes' if same else 'NO':<9}  {acc_diff:.1e}")
    naive_total = sum(per_step) / len(per_step) * n
    print(f"whole run: naive {naive_total:.0f} s ({naive_total / 60:.0f} min, {sum(per_step) / len(per_step):.2f} s "
          f"per step measured above), fmprune {loop_s:.1f} s: {naive_total / loop_s:.1f}x faster")


# -- ResNet-20: the general path
FAMILIES = (("gradients", "fresh pass"), ("activations", "downstream"), ("weights", "cut layers"))


def family(criterion: str) -> str:
    """Which groups a removal makes the engine rescore (``Criterion.reads``): every group after a
    fresh forward and backward (gradients), those downstream of the cut layers (activations),
    those with a cut layer (weights)."""
    reads = create_criterion(criterion).reads
    return next((label for key, label in FAMILIES if key in reads), "none")


def timed(fn):
    """(fn's result, wall seconds, CPU seconds of this process: every thread, others' load aside)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def resnet(args) -> None:
    splits = load_splits("mnist3x32")
    spec = ModelSpec("resnet20", input_shape=(3, 32, 32))
    torch.manual_seed(0)
    base = build_model(spec)
    if args.resnet_train:
        train(base, splits.train, TrainConfig(epochs=1, batch_size=64, max_iters=args.resnet_train))
    base.eval()
    example = torch.zeros(1, *spec.input_shape)
    calib = calibration_subset(splits.train, args.resnet_calibration, 0)
    evaluation = Split(splits.val.images[:args.resnet_eval].contiguous(), splits.val.labels[:args.resnet_eval])
    calib = Split(calib.images.contiguous(), calib.labels)
    scope = [g.name for g in fmprune.trace(copy.deepcopy(base), example).groups]
    weights = f"trained {args.resnet_train} iterations" if args.resnet_train else "random weights"
    print(f"\nResNet-20 ({weights}) on MNIST as 3x32x32: {len(scope)} groups, +{args.normalize}, calibration "
          f"{len(calib)}, accuracy on {len(evaluation)} validation images, {args.resnet_steps} steps of one map; "
          "naive and fmprune steps alternate (same load)")
    print(f"{'criterion':<16}{'rescores':<12}{'naive s/step':>13}{'fmprune':>9}{'ratio':>7}{'steps 2+':>10}"
          f"{'CPU s ratio':>13}  same maps  max |acc diff|")
    for criterion in args.resnet_criteria.split(","):
        compare_resnet(base, example, evaluation, calib, scope, criterion, args)
    print("ratio: mean wall time per step, naive over fmprune, all steps (the first evaluates and scores "
          "everything in both); steps 2+: without the first; CPU s: process CPU time, all steps")


def compare_resnet(base, example, evaluation: Split, calib: Split, scope: list[str], criterion: str, args) -> None:
    """Naive rebuild loop against one persistent GraphEngine, step by step in turn."""
    phases = {"rebuild": 0.0, "score": 0.0, "remove + evaluate": 0.0}

    def naive_step(removed: list[tuple[str, int]]):
        """Deep copy of the base, trace, re-apply every removal so far, score, remove, evaluate."""
        (g, engine), t_rebuild, _ = timed(lambda: rebuilt(removed))
        chosen, t_score, _ = timed(lambda: engine.select(1))
        accuracy, t_eval, _ = timed(lambda: remove_and_evaluate(g, chosen))
        for name, dt in zip(phases, (t_rebuild, t_score, t_eval)):
            phases[name] += dt
        return chosen, accuracy

    def rebuilt(removed):
        g = fmprune.trace(copy.deepcopy(base), example)
        for group, original in removed:
            g.remove(group, [g.group(group).original.index(original)])
        return g, GraphEngine(g, create_criterion(criterion), evaluation, calib, scope, args.normalize)

    def remove_and_evaluate(g, chosen):
        for c in chosen:
            g.remove(c.layer, [c.index])
        return evaluate(g.model, evaluation)

    graph = fmprune.trace(copy.deepcopy(base), example)
    engine = None

    def engine_step():
        nonlocal engine
        if engine is None:          # its setup counts in its first step
            engine = create_engine(graph, create_criterion(criterion), evaluation, calib, scope, args.normalize)
        chosen = engine.select(1)
        engine.remove_selected(chosen)
        return chosen, engine.accuracy()

    removed: list[tuple[str, int]] = []
    ref, got, naive_t, engine_t = [], [], [], []
    for _ in range(args.resnet_steps):
        result, wall, cpu = timed(lambda: naive_step(removed))
        ref.append(result)
        naive_t.append((wall, cpu))
        removed += [(c.layer, c.original) for c in result[0]]
        result, wall, cpu = timed(engine_step)
        got.append(result)
        engine_t.append((wall, cpu))
    same = all([(c.layer, c.original) for c in a] == [(c.layer, c.original) for c in b]
               for (a, _), (b, _) in zip(ref, got))
    acc_diff = max(abs(ra - ga) for (_, ra), (_, ga) in zip(ref, got))
    n = len(got)
    naive_s, engine_s = sum(w for w, _ in naive_t) / n, sum(w for w, _ in engine_t) / n
    later = sum(w for w, _ in naive_t[1:]) / max(1e-9, sum(w for w, _ in engine_t[1:]))
    cpu = sum(c for _, c in naive_t) / max(1e-9, sum(c for _, c in engine_t))
    print(f"{criterion:<16}{family(criterion):<12}{naive_s:>13.2f}{engine_s:>9.2f}{naive_s / engine_s:>6.1f}x"
          f"{later:>9.1f}x{cpu:>12.1f}x  {'yes' if same else 'NO':<9}  {acc_diff:.1e}")
    total = sum(phases.values())
    groups = Counter(c.layer for chosen, _ in got for c in chosen)
    print(f"{'':<16}naive step: " + ", ".join(f"{name} {100 * t / total:.0f} %" for name, t in phases.items())
          + "; removed from " + ", ".join(f"{g} x{k}" for g, k in groups.most_common()))


if __name__ == "__main__":
    main()
