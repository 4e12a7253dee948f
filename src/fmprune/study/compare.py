"""The final table: base model, pruned model, and the pruned architecture trained from scratch,
measured side by side on the test split (accuracy, size, MACs, bytes, CPU latency)."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..run.checkpoint import Checkpoint, load_checkpoint, make_checkpoint, save_checkpoint
from ..data import Splits
from ..errors import FmpruneError
from ..costs import measure_latencies, model_bytes
from ..tables import markdown_table
from ..runtimes import RUNTIMES, available_runtimes, check_runtimes, prepare
from ..graph import Graph
from ..training import Recipe, evaluate, recipe_from_dict, train_recipe

LATENCY_BATCHES = (1, 256)


@dataclass
class ModelRow:
    label: str
    accuracy: float
    params: int
    macs: int
    bytes: int
    latency: dict[int, float]      # batch size -> median seconds, in the comparison's first runtime
    latencies: dict[str, dict[int, float]] = field(default_factory=dict)   # runtime -> batch -> s


@dataclass
class Comparison:
    rows: list[ModelRow]           # the first row is the base model
    threads: int
    runtimes: list[str] = field(default_factory=lambda: ["eager"])   # the first one fills ``latency``

    def _latency(self, row: ModelRow, runtime: str) -> dict[int, float]:
        return row.latencies.get(runtime, row.latency if runtime == self.runtimes[0] else {})

    def table(self) -> list[dict[str, str]]:
        """Rows as printed: every ratio is against the base model."""
        base = self.rows[0]
        out = []
        for r in self.rows:
            row = {
                "model": r.label,
                "test accuracy %": f"{100 * r.accuracy:.2f}",
                "accuracy loss pp": f"{100 * (base.accuracy - r.accuracy):+.2f}",
                "params": f"{r.params:,}",
                "compression x": f"{base.params / r.params:.1f}",
                "MACs": f"{r.macs:,}",
                "MAC reduction x": f"{base.macs / r.macs:.1f}",
                "size KiB": f"{r.bytes / 1024:,.1f}",
            }
            row["runtime"] = self.runtimes[0]
            for b in LATENCY_BATCHES:
                row[f"latency b{b} ms"] = f"{1000 * r.latency[b]:.3f}"
                row[f"speed-up b{b} x"] = f"{base.latency[b] / r.latency[b]:.1f}"
            out.append(row)
        return out

    def runtime_table(self) -> list[dict[str, str]]:
        """One row per runtime and batch size: each model's latency, and for the others their
        speed-up over the base and that speed-up as a fraction of their MAC reduction."""
        base = self.rows[0]
        out = []
        for runtime in self.runtimes:
            for b in LATENCY_BATCHES:
                row = {"runtime": runtime, "batch": str(b)}
                for r in self.rows:
                    row[f"{r.label} ms"] = f"{1000 * self._latency(r, runtime)[b]:.3f}"
                for r in self.rows[1:]:
                    speed_up = self._latency(base, runtime)[b] / self._latency(r, runtime)[b]
                    row[f"{r.label} speed-up x"] = f"{speed_up:.2f}"
                    row[f"{r.label} of MAC cut"] = f"{speed_up / (base.macs / r.macs):.2f}"
                out.append(row)
        return out

    def _note(self) -> str:
        where = "; ".join(f"{rt}: {RUNTIMES[rt]}" for rt in self.runtimes)
        return (f"Accuracy on the test split; MACs per image; latency: median CPU time of one forward "
                f"({where}), {self.threads} threads, models measured in turns in one process.")

    def to_markdown(self) -> str:
        parts = [markdown_table(self.table())]
        if len(self.runtimes) > 1:
            parts.append(markdown_table(self.runtime_table()))
        return "\n\n".join(parts) + "\n\n" + self._note() + "\n"

    def to_text(self) -> str:
        parts = [_text(self.table())]
        if len(self.runtimes) > 1:
            parts.append(_text(self.runtime_table()))
        return "\n\n".join(parts)

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        md, cs = directory / "compare.md", directory / "compare.csv"
        md.write_text(self.to_markdown())
        with open(cs, "w", newline="") as f:
            writer = csv.writer(f)
            extra = self.runtimes[1:]
            writer.writerow(["model", "test_accuracy", "params", "macs", "bytes", "runtime"]
                            + [f"latency_b{b}_s" for b in LATENCY_BATCHES]
                            + [f"latency_b{b}_s_{rt}" for rt in extra for b in LATENCY_BATCHES])
            for r in self.rows:
                writer.writerow([r.label, f"{r.accuracy:.6f}", r.params, r.macs, r.bytes, self.runtimes[0]]
                                + [f"{r.latency[b]:.6g}" for b in LATENCY_BATCHES]
                                + [f"{self._latency(r, rt)[b]:.6g}" for rt in extra for b in LATENCY_BATCHES])
        return md, cs


def _text(rows: list[dict[str, str]]) -> str:
    head = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in head]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt([r[h] for h in head]) for r in rows])


def reinitialize(model: nn.Module) -> None:
    """Fresh default initialisation at the model's current (pruned) sizes."""
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def train_from_scratch(pruned: Checkpoint, splits: Splits, recipe: Recipe,
                       on_step: Callable[[int, int, float], None] | None = None) -> Checkpoint:
    """The pruned architecture, freshly initialised and trained with the base model's recipe."""
    model, graph = pruned.build_traced()
    torch.manual_seed(recipe.seed)
    reinitialize(model)
    start = time.perf_counter()
    train_recipe(model, splits.train, recipe, on_step)
    recipe_dict = {**recipe.to_dict(), "train_seconds": round(time.perf_counter() - start, 1)}
    return make_checkpoint(model, pruned.model_spec, graph,
                           data_fingerprint=splits.fingerprint(), seed=recipe.seed, recipe=recipe_dict,
                           accuracies={"val": evaluate(model, splits.val)},
                           origin={"from_scratch_of": graph.sizes()})


def recipe_of(base: Checkpoint) -> Recipe:
    """The recipe the base model was trained with (LeNet's one-cycle Adam, or a zoo SGD recipe)."""
    return recipe_from_dict(base.recipe)


def scratch_path(directory: Path, pruned: Checkpoint, recipe: Recipe) -> Path:
    key = json.dumps([pruned.model_spec, pruned.alive, recipe.to_dict()], sort_keys=True)
    return directory / f"scratch-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"


def measure_row(label: str, ckpt: Checkpoint, splits: Splits) -> tuple[ModelRow, nn.Module, Graph]:
    model, graph = ckpt.build_traced()
    row = ModelRow(label, evaluate(model, splits.test), graph.total_params(), graph.total_macs(),
                   model_bytes(model), {})
    return row, model, graph


def suggested_runtimes() -> list[str]:
    """What ``fmprune compare`` should time: eager PyTorch (what a user runs by default) first,
    then channels-last eager (the fastest here for pruned LeNets at batch 256) and onnxruntime
    (the fastest at batch 1) when installed. torch.compile is left out: it compiles each model
    and batch size first, which takes longer than the measurement."""
    return ["eager", "eager-cl"] + (["onnxruntime"] if "onnxruntime" in available_runtimes() else [])


def compare_models(base: Checkpoint, pruned: Checkpoint, splits: Splits, scratch: Checkpoint | None,
                   repeats: int = 30, runtimes: list[str] | tuple[str, ...] = ("eager",)) -> Comparison:
    """Measure the models side by side; latencies are taken in turns within one process, in every
    runtime of ``runtimes`` (see :func:`suggested_runtimes`; the first one fills ``latency``)."""
    runtimes = check_runtimes(list(runtimes))
    entries = [("base", base), ("pruned", pruned)] + ([("from scratch", scratch)] if scratch else [])
    measured = [measure_row(label, ckpt, splits) for label, ckpt in entries]
    models = [m for _, m, _ in measured]
    for runtime in runtimes:
        runners = prepare(models, runtime, base.input_shape)
        for b in LATENCY_BATCHES:
            reps = repeats if b == 1 else max(5, repeats // 3)
            times = measure_latencies(models, base.input_shape, b, reps, runtime=runtime, runners=runners)
            for (row, _, _), t in zip(measured, times):
                row.latencies.setdefault(runtime, {})[b] = t
    for row, _, _ in measured:
        row.latency = dict(row.latencies[runtimes[0]])
    return Comparison([row for row, _, _ in measured], torch.get_num_threads(), runtimes)


def load_for_comparison(base_path: Path, pruned_path: Path, splits: Splits) -> tuple[Checkpoint, Checkpoint]:
    base, pruned = load_checkpoint(base_path), load_checkpoint(pruned_path)
    for path, ckpt in ((base_path, base), (pruned_path, pruned)):
        if ckpt.data_fingerprint and ckpt.data_fingerprint != splits.fingerprint():
            raise FmpruneError(f"{path}: made on other data (fingerprint {ckpt.data_fingerprint}); "
                               "pass the --data-dir it was trained on")
    if base.model_spec != pruned.model_spec:
        raise FmpruneError(f"{pruned_path} is a {pruned.spec.describe()}, not a pruned version of "
                           f"{base_path} ({base.spec.describe()})")
    return base, pruned


def scratch_checkpoint(base: Checkpoint, pruned: Checkpoint, splits: Splits, directory: Path,
                       on_step: Callable[[int, int, float], None] | None = None) -> tuple[Checkpoint, Path, bool]:
    """The cached from-scratch model for this architecture and recipe, trained if missing."""
    recipe = recipe_of(base)
    path = scratch_path(directory, pruned, recipe)
    if path.is_file():
        return load_checkpoint(path), path, False
    ckpt = train_from_scratch(pruned, splits, recipe, on_step)
    save_checkpoint(ckpt, path)
    return ckpt, path, True
