"""Why pruning for onnxruntime keeps widths multiples of 8: ResNet-20 cut uniformly per stage to
widths on and off multiples of 8, timed in each runtime.

onnxruntime's CPU convolutions run in a blocked layout (NCHWc); a model whose channel counts are
not multiples of the block leaves that path. This prints, per runtime, the measured milliseconds
of the same architecture at each set of stage widths (random weights: time does not depend on
them), with its MACs, so the step shows beside what a MAC count would predict. fmprune's
``round_to`` default for latency targets on onnxruntime (``fmprune.runtimes.channel_multiple``)
rests on it.

    .venv/bin/python benchmarks/channel_multiples.py [--runtimes onnxruntime,eager] [--batch 64]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics

import torch

import fmprune
from fmprune.latency import measure_model
from fmprune.models.spec import ModelSpec, build_model

# stage widths (the base is 16, 32, 64): each off-multiple set beside its neighbours on multiples
WIDTHS = [(16, 32, 64), (16, 32, 56), (16, 32, 57), (16, 32, 55), (16, 32, 48), (16, 32, 47),
          (12, 24, 48), (10, 20, 40), (9, 17, 33), (8, 16, 32), (7, 15, 31)]


def cut(base: torch.nn.Module, widths: tuple[int, int, int]):
    """A copy of ResNet-20 with every group of a stage cut to that stage's width."""
    model = copy.deepcopy(base)
    graph = fmprune.trace(model, torch.zeros(1, 3, 32, 32))
    for group in graph.groups:
        keep = dict(zip((16, 32, 64), widths))[group.traced_size]
        if keep < group.size:
            graph.remove(group.name, list(range(keep, group.size)))
    return model, graph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtimes", default="onnxruntime,eager")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--clock", default="cpu", choices=["cpu", "wall"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = build_model(ModelSpec("resnet20", {}, 10, (3, 32, 32))).eval()
    runtimes = args.runtimes.split(",")
    print(f"ResNet-20, batch {args.batch}, one thread, {args.clock} clock, median of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'stage widths':<16}{'MACs x':>8}" + "".join(f"{r + ' ms':>17}{'x':>7}" for r in runtimes))
    base_ms: dict[str, float] = {}
    for widths in WIDTHS:
        model, graph = cut(base, widths)
        row = f"{'/'.join(map(str, widths)):<16}"
        if widths == WIDTHS[0]:
            base_macs = graph.total_macs()
        row += f"{base_macs / graph.total_macs():>8.2f}"
        for runtime in runtimes:
            seconds = measure_model(model, graph, runtime, args.batch, repeats=args.repeats, clock=args.clock)
            ms = 1000 * statistics.median(seconds)
            base_ms.setdefault(runtime, ms)
            row += f"{ms:>17.2f}{base_ms[runtime] / ms:>7.2f}"
        print(row, flush=True)
    print("x: speed-up over the first row (the unpruned widths)")


if __name__ == "__main__":
    main()
