"""Naive masked loop vs fmprune's engine on the same trained LeNet and the same steps.

For each scope, both loops run the first ``--steps`` steps (criterion on ``--calibration``
training images, accuracy on the whole validation split after every step); the script checks
that they remove the same maps with the same accuracies and prints both times and their ratio.
``--full`` also times the whole-network run of every removable map through ``run_pruning``
(what ``fmprune prune`` does, run directory included) and checks it against the naive loop on
windows at its start, middle and end.

    .venv/bin/python benchmarks/prune_loop.py [--steps 50] [--full]
"""

from __future__ import annotations

import argparse
import csv
import copy
import tempfile
import time

import torch

from fmprune.run.checkpoint import load_checkpoint
from fmprune.cli import default_checkpoint_path
from fmprune.criteria import create_criterion
from fmprune.data import load_splits
from fmprune.engine.chain import PruningEngine
from fmprune.run.loop import PruneConfig, calibration_subset, run_pruning
from fmprune.engine.reference import NaiveLoop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--criterion", default="taylor")
    ap.add_argument("--normalize", default="l2")
    ap.add_argument("--steps", type=int, default=50, help="steps per scope for both loops")
    ap.add_argument("--scopes", default="all,conv1,conv2,fc1")
    ap.add_argument("--calibration", type=int, default=1000)
    ap.add_argument("--full", action="store_true", help="also time the whole-network run of all maps")
    ap.add_argument("--window", type=int, default=10, help="naive steps per window of the full run")
    args = ap.parse_args()

    splits = load_splits()
    path = args.checkpoint or default_checkpoint_path(splits, 0)
    base = load_checkpoint(path)
    calib = calibration_subset(splits.train, args.calibration, 0)
    print(f"checkpoint {path}\n{args.criterion}+{args.normalize}, calibration {len(calib)} training images, "
          f"accuracy on {len(splits.val)} validation images, {torch.get_num_threads()} threads")
    print(f"{'scope':<7}{'steps':>6}{'naive s':>10}{'engine s':>10}{'ratio':>8}  same maps  max |acc diff|")
    totals = [0.0, 0.0]
    for scope in args.scopes.split(","):
        model, topo = base.build()
        layers = topo.scope(scope)
        steps = min(args.steps, sum(topo.stage(n).n_maps - 1 for n in layers))
        naive = NaiveLoop(model, base.input_shape, create_criterion(args.criterion), splits.val, calib,
                          layers, args.normalize)
        start = time.perf_counter()
        ref = [naive.step(1) for _ in range(steps)]
        t_naive = time.perf_counter() - start

        model, topo = base.build()
        start = time.perf_counter()
        engine = PruningEngine(topo, create_criterion(args.criterion), splits.val, calib, layers, args.normalize)
        got = []
        for _ in range(steps):
            chosen = engine.select(1)
            engine.remove_selected(chosen)
            got.append((chosen, engine.accuracy()))
        t_engine = time.perf_counter() - start
        same = all([(c.layer, c.original) for c in a] == [(c.layer, c.original) for c in b]
                   for (a, _), (b, _) in zip(ref, got))
        acc_diff = max(abs(ra - ga) for (_, ra), (_, ga) in zip(ref, got))
        totals[0] += t_naive
        totals[1] += t_engine
        print(f"{scope:<7}{steps:>6}{t_naive:>10.1f}{t_engine:>10.1f}{t_naive / t_engine:>7.1f}x  "
              f"{'yes' if same else 'NO':<9}  {acc_diff:.1e}")
    print(f"{'total':<13}{totals[0]:>10.1f}{totals[1]:>10.1f}{totals[0] / totals[1]:>7.1f}x")

    if args.full:
        full_run(path, splits, base, calib, args)


def full_run(path: str, splits, base, calib, args) -> None:
    """Time the whole-network run of every removable map (what ``fmprune prune`` does), then
    replay its removals in the naive loop and time the naive loop on windows at the start,
    middle and end of the run, checking it makes the same choices with the same accuracies.
    The naive loop masks a dense model, so its cost per step is the same at every step: the
    whole-run naive time is its measured mean per step times the number of steps."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PruneConfig(criterion=args.criterion, normalize=args.normalize, calibration=args.calibration)
        start = time.perf_counter()
        summary = run_pruning(path, splits, cfg, tmp)
        wall = time.perf_counter() - start
        with open(f"{tmp}/steps.csv") as f:
            rows = list(csv.DictReader(f))[1:]   # row 0 is the unpruned model
    print(f"\nfull whole-network run: {summary.steps} steps in {wall:.1f} s "
          f"(loop {summary.seconds:.1f} s), accuracy {summary.base_accuracy:.4f} -> {summary.final_accuracy:.4f}")
    steps = {int(r["step"]) for r in rows}
    n, w = max(steps), args.window
    print(f"{'window':<14}{'naive s':>9}{'engine s':>10}{'ratio':>8}  same maps  max |acc diff|")
    per_step = []
    for first in sorted({1, max(1, n // 2 - w // 2), max(1, n - w + 1)}):
        model, _ = base.build()
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
          f"per step measured above), fmprune {summary.seconds:.1f} s: {naive_total / summary.seconds:.1f}x faster")


if __name__ == "__main__":
    main()
