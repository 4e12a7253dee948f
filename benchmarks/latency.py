"""Latency of a base model and its pruned version in every available runtime, side by side.

Every repeat runs each (runtime, model) pair once, in turns, so that the drifts of a busy machine
hit all of them alike; medians are printed with the pruned model's speed-up and that speed-up as
a fraction of its MAC reduction (the thesis-target check of issue 16 asks for >= 0.7 at batch 256).

    .venv/bin/python benchmarks/latency.py runs/thesis-target [--base CKPT] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from fmprune.runtimes import RUNTIMES, available_runtimes, prepare
from fmprune.run.checkpoint import load_checkpoint, resolve_model_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pruned", type=Path, help="pruned checkpoint or run directory")
    ap.add_argument("--base", type=Path, default=None, help="base checkpoint (default: the pruned model's origin)")
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runtimes", default=",".join(available_runtimes()))
    args = ap.parse_args()

    pruned_ckpt = load_checkpoint(resolve_model_path(args.pruned))
    base_path = args.base or Path(pruned_ckpt.origin["base_checkpoint"])
    base_model, base_graph = load_checkpoint(base_path).build_traced()
    pruned_model, pruned_graph = pruned_ckpt.build_traced()
    mac_x = base_graph.total_macs() / pruned_graph.total_macs()
    shape = tuple(pruned_ckpt.input_shape)
    one, five, _ = os.getloadavg()
    print(f"{args.pruned}: MAC reduction x{mac_x:.2f}; {torch.get_num_threads()} threads; "
          f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs")
    runtimes = args.runtimes.split(",")
    runners = {rt: prepare([base_model, pruned_model], rt, shape) for rt in runtimes}
    print(f"{'runtime':<13}{'batch':>6}{'base ms':>11}{'pruned ms':>11}{'speed-up':>10}{'of MAC cut':>12}")
    for batch in (int(b) for b in args.batches.split(",")):
        x = torch.rand(batch, *shape)
        times = {(rt, i): [] for rt in runtimes for i in range(2)}
        for r in range(args.warmup + args.repeats):
            for rt in runtimes:
                for i, run in enumerate(runners[rt]):
                    start = time.perf_counter()
                    run(x)
                    if r >= args.warmup:
                        times[rt, i].append(time.perf_counter() - start)
        for rt in runtimes:
            b, p = (statistics.median(times[rt, i]) for i in range(2))
            print(f"{rt:<13}{batch:>6}{1000 * b:>11.3f}{1000 * p:>11.3f}{b / p:>9.2f}x{b / p / mac_x:>12.2f}")
    print("; ".join(f"{rt}: {RUNTIMES[rt]}" for rt in runtimes))


if __name__ == "__main__":
    main()
