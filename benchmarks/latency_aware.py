"""Latency-aware pruning against MAC-targeted pruning at the same measured-latency target.

For each model and runtime, a latency table of the base model is measured (``fmprune.latency_table``)
and three prunings of the same base start from the same weights, criterion (Taylor, rms), step
size, calibration batches and retraining, differing only in what a map costs and when they stop:

- ``latency``: scores divided by the milliseconds a removal saves (``per_cost="latency"``); each
  step cuts the predicted latency by ``--decrement`` of what is left (``step(target_latency=)``),
  the last one down to T by the table's prediction;
- ``macs``: scores divided by the MACs a removal saves (``per_cost="macs"``); each step cuts the
  MACs by ``--decrement`` of what is left, or by the measured latency still to go if less
  (``step(target_macs=)``), until the *measured* latency (timed in turns with the base, so a
  drift of the machine's load cancels) is at most what the ``latency`` model measured: both are
  compared at the same measured latency;
- ``plain``: no cost term, stepped and stopped like ``macs``;
- ``target``: no cost term, stepped and stopped like ``latency`` (the table as a stop rule only);
- ``target8``: the same with ``round_to=8`` (every group a multiple of 8 maps or its original
  size), the widths onnxruntime's blocked layout on this CPU does not pad.

Then every model gets the same short retraining, and base and pruned models are timed in turns
(median and interquartile spread). The table compares accuracy kept, measured latency, and the
latency-aware model's predicted speed-up against its measured one (issue 27 asks >= 0.8).

Timing uses one thread and, by default, the CPU-time clock (``--clock cpu``): on a machine shared
with other processes the wall clock mostly measures them (see docs/latency.md).

    .venv/bin/python benchmarks/latency_aware.py --models lenet --runtimes eager,onnxruntime
    .venv/bin/python benchmarks/latency_aware.py --models resnet20 --target 0.6 --grid 0.25,0.5,1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import fmprune
from fmprune.data import fmprune_home, load_splits
from fmprune.errors import FmpruneError
from fmprune.latency import latency_table
from fmprune.run.checkpoint import load_checkpoint_for
from fmprune.runtimes import prepare
from fmprune.timing import time_runners
from fmprune.training import BatchStream, evaluate, fine_tune

from peers import one_cycle

MODELS = {   # name -> (cached base checkpoint of the quality benchmark, its data)
    "lenet": ("quality-lenet-dd54f5d70a09dd56-it2200-seed0.pt", "fashion-mnist"),
    "resnet20": ("quality-resnet20-f38bea6f34a5c3cf-it300-seed0.pt", "fashion-mnist3x32"),
}
METHODS = {"latency": "latency", "macs": "macs", "plain": "none", "target": "none", "target8": "none"}   # method -> per_cost
ROUND_TO = {"target8": 8}   # method -> round_to (1 for the others): widths a blocked layout does not pad
BY_TABLE = ("latency", "target", "target8")   # stepped and stopped by the table's prediction, not by timing


def measure(models: list, shape: tuple[int, ...], runtime: str, batch: int, repeats: int, clock: str,
            runners: list | None = None):
    """(median ms, interquartile spread / median) of each model, timed in turns (``runners``:
    the models already prepared for ``runtime``)."""
    runners = runners or [prepare([m], runtime, shape)[0] for m in models]
    x = torch.rand(batch, *shape)
    out = []
    for t in time_runners(runners, [x] * len(runners), repeats, 3, clock=clock):
        ms = sorted(1000 * s for s in t)
        q1, med, q3 = statistics.quantiles(ms, n=4)
        out.append((statistics.median(ms), (q3 - q1) / statistics.median(ms)))
    return out


def prune(base, graph_example, splits, table, per_cost: str, target: float, args, by_table: bool, round_to: int = 1):
    """One pruning of a copy of ``base`` down to ``target`` of its latency: Taylor statistics on
    the same calibration batches before every step, each step cutting ``args.decrement`` of the
    predicted latency (``latency``: ``target`` predicted) or of the MACs (the others: ``target``
    measured, as a fraction of the base timed in the same turns) left, ``args.retrain`` updates
    after each step; ``by_table``: stepped and stopped by the table's prediction."""
    model = copy.deepcopy(base)
    pruner = fmprune.Pruner(model, graph_example, criterion="taylor", per_cost=per_cost, round_to=round_to,
                            latency_table=table if by_table else None)
    calibration = splits.train.subset(args.calibration)
    stream = BatchStream(splits.train, 64, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    shape = tuple(graph_example.shape[1:])
    steps, measured = 0, 1.0   # measured: latency now / the base's
    base_runner = prepare([base], table.runtime, shape)[0] if not by_table else None   # exported once
    while True:
        model.eval()
        for start in range(0, len(calibration), 64):
            x, y = calibration.images[start:start + 64], calibration.labels[start:start + 64]
            F.cross_entropy(model(x), y, reduction="sum").backward()
            pruner.accumulate()
            model.zero_grad()
        if by_table:
            now = table.predict(pruner.graph) / pruner.base_ms
            chosen = pruner.step(target_latency=max(target, now * (1 - args.decrement)), optimizer=optimizer)
        else:   # latency falls slower than MACs: a cut by the latency still to go never overshoots much
            now = pruner.graph.total_macs() / pruner.base_macs
            try:
                chosen = pruner.step(target_macs=now * max(1 - args.decrement, target / measured), optimizer=optimizer)
            except FmpruneError as e:   # the measured goal lies below the smallest model: stop at this one
                print(f"    stopped at {1 / now:.2f}x fewer MACs: {e}", flush=True)
                break
        if not chosen:
            break
        steps += 1
        fine_tune(model, stream, optimizer, args.retrain)
        if not by_table:
            runners = [base_runner, prepare([model], table.runtime, shape)[0]]
            (base_ms, _), (ms, _) = measure([base, model], shape, table.runtime, table.batch, args.check_repeats,
                                            args.clock, runners)
            measured = ms / base_ms
            if measured <= target:
                break
    pruner.remove_hooks()
    torch.manual_seed(0)
    one_cycle(model, BatchStream(splits.train, 64, 0), args.final_retrain)
    return model.eval(), pruner, steps


def bench(name: str, runtime: str, args, log) -> list[dict]:
    ckpt_name, data = MODELS[name]
    splits = load_splits(data)
    base_ckpt = load_checkpoint_for(fmprune_home() / "checkpoints" / ckpt_name, splits)
    base, graph = base_ckpt.build_traced()
    base.eval()
    shape = tuple(splits.input_shape)
    test = splits.test.subset(args.eval_size)
    started = time.perf_counter()
    table = latency_table(base, graph, f"{name}-{data}", runtime, args.batch, grid=args.grid,
                          repeats=args.repeats, clock=args.clock)
    log(f"{name} {runtime}: table {'cached' if table.cached else 'measured'} in {time.perf_counter() - started:.0f} s; "
        f"noise median {100 * table.noise()[0]:.1f} %, base {table.measured_ms:.3f} ms "
        f"(spread {100 * table.measured_spread:.1f} %)")
    pruned = {}
    goal = args.target
    for method, per_cost in METHODS.items():
        if method not in args.methods.split(","):
            continue
        started = time.perf_counter()
        by_table = method in BY_TABLE
        model, pruner, steps = prune(base, graph.example_inputs[0], splits, table, per_cost,
                                     args.target if by_table else goal, args, by_table, ROUND_TO.get(method, 1))
        pruned[method] = (model, pruner, steps)
        if method == "latency":   # the others stop at the latency this one measures
            (base_ms, _), (ms, _) = measure([base, model], shape, runtime, args.batch, args.repeats, args.clock)
            goal = ms / base_ms
        log(f"  {method}: {steps} steps in {time.perf_counter() - started:.0f} s"
            + (f"; measured {goal:.3f} of the base: the others' goal" if method == "latency" else ""))
    models = [base] + [m for m, _, _ in pruned.values()]
    timed = measure(models, shape, runtime, args.batch, args.repeats, args.clock)
    base_accuracy = evaluate(base, test)
    rows = [{"model": name, "runtime": runtime, "method": "base", "accuracy": base_accuracy,
             "macs_x": 1.0, "predicted_ms": table.predict(graph), "measured_ms": timed[0][0],
             "spread": timed[0][1], "steps": 0, "maps_left": sum(graph.sizes().values())}]
    for (method, (model, pruner, steps)), (ms, spread) in zip(pruned.items(), timed[1:]):
        rows.append({"model": name, "runtime": runtime, "method": method, "accuracy": evaluate(model, test),
                     "macs_x": pruner.base_macs / pruner.graph.total_macs(), "predicted_ms": table.predict(pruner.graph),
                     "measured_ms": ms, "spread": spread, "steps": steps,
                     "maps_left": sum(pruner.graph.sizes().values())})
    for r in rows:
        r["measured_x"] = timed[0][0] / r["measured_ms"]
        r["predicted_x"] = rows[0]["predicted_ms"] / r["predicted_ms"]
        r["of_predicted"] = r["measured_x"] / r["predicted_x"]
        r.update(batch=args.batch, clock=args.clock, target=args.target, table_noise=table.noise()[0],
                 load=os.getloadavg()[0])
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| model | runtime | method | accuracy | MACs x | predicted ms | measured ms (spread) | "
            "predicted x | measured x | measured / predicted |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['model']} | {r['runtime']} | {r['method']} | {100 * r['accuracy']:.2f} % | "
                     f"{r['macs_x']:.2f} | {r['predicted_ms']:.3f} | {r['measured_ms']:.3f} ({100 * r['spread']:.0f} %) | "
                     f"{r['predicted_x']:.2f} | {r['measured_x']:.2f} | {r['of_predicted']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet")
    ap.add_argument("--runtimes", default="eager,onnxruntime")
    ap.add_argument("--methods", default="latency,macs,plain")
    ap.add_argument("--target", type=float, default=0.5, help="latency target: fraction of the base's")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--grid", default="0.125,0.25,0.5,0.75,1")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--check-repeats", type=int, default=11, help="repeats of the measured stop rule")
    ap.add_argument("--clock", default="cpu", choices=["cpu", "wall"])
    ap.add_argument("--decrement", type=float, default=0.1,
                    help="each step cuts this fraction of the predicted latency (or of the MACs) left")
    ap.add_argument("--calibration", type=int, default=256)
    ap.add_argument("--retrain", type=int, default=20, help="updates after every step")
    ap.add_argument("--final-retrain", type=int, default=300)
    ap.add_argument("--eval-size", type=int, default=10000)
    ap.add_argument("--out", type=Path, default=None, help="JSON of the rows")
    args = ap.parse_args()
    torch.set_num_threads(1)

    def log(line: str) -> None:
        print(line, flush=True)
    rows = []
    for name in args.models.split(","):
        for runtime in args.runtimes.split(","):
            rows += bench(name, runtime, args, log)
            log(markdown(rows))
    if args.out is not None:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
