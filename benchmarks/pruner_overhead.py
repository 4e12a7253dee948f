"""What the Pruner's hooks cost a training step that does not score: ResNet-20 (the zoo's, 3x32x32)
at batch 64, SGD step with and without a Pruner attached, timed in turns so a busy machine's drift
hits both alike; also with ``pruner.recording = False`` (the iterations whose statistics are not
needed). Also the cost of one step(maps=8).

    .venv/bin/python benchmarks/pruner_overhead.py [--repeats 30] [--batch 64] [--criterion taylor]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

import fmprune
from fmprune.models.spec import ModelSpec, build_model


def train_step(model, optimizer, x, y, pruner=None) -> float:
    start = time.perf_counter()
    F.cross_entropy(model(x), y).backward()
    if pruner is not None:
        pruner.accumulate()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--criterion", default="taylor")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_model(ModelSpec("resnet20", num_classes=10, input_shape=(3, 32, 32))).train()
    plain, hooked = base, copy.deepcopy(base)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
    opt_hooked = torch.optim.SGD(hooked.parameters(), lr=0.01, momentum=0.9)
    pruner = fmprune.Pruner(hooked, torch.zeros(1, 3, 32, 32), criterion=args.criterion)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    for _ in range(3):                                   # warm-up
        train_step(plain, opt_plain, x, y)
        train_step(hooked, opt_hooked, x, y, pruner)
    pruner.taps.clear()
    times = {"without": [], "with": [], "paused": []}
    for _ in range(args.repeats):
        times["without"].append(train_step(plain, opt_plain, x, y))
        times["with"].append(train_step(hooked, opt_hooked, x, y, pruner))
        pruner.recording = False
        times["paused"].append(train_step(hooked, opt_hooked, x, y, pruner))
        pruner.recording = True
    a, b = statistics.median(times["without"]), statistics.median(times["with"])
    c = statistics.median(times["paused"])
    print(f"ResNet-20, batch {args.batch}, {torch.get_num_threads()} threads, {args.repeats} steps each, in turns")
    print(f"train step without pruner  {a * 1e3:8.1f} ms (median)")
    print(f"train step with {args.criterion} hooks  {b * 1e3:8.1f} ms (median; forward+backward+accumulate)")
    print(f"overhead                    {100 * (b / a - 1):+8.1f} %")
    print(f"recording off               {c * 1e3:8.1f} ms, overhead {100 * (c / a - 1):+.1f} %")
    start = time.perf_counter()
    removed = pruner.step(maps=8, optimizer=opt_hooked)
    print(f"step(maps=8) on {pruner.examples or args.repeats * args.batch} examples: "
          f"{time.perf_counter() - start:.3f} s, removed {len(removed)} maps")


if __name__ == "__main__":
    main()
