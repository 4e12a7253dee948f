"""``fmprune compare``, ``export``, ``score`` and ``quantize``: what a pruned model is worth where
it will run."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from ..data import DataRequest
from ..efficiency import format_score, save_checkpoint_score, score_checkpoint, score_model
from ..errors import FmpruneError
from ..models import create_model, default_input_shape, parse_input_shape
from ..quantize import QuantizeConfig, quantize_checkpoint, score_target
from ..run.base_model import default_checkpoint_path
from ..run.checkpoint import load_checkpoint, resolve_model_path
from ..runtimes import check_runtimes
from ..study.compare import (compare_models, load_for_comparison, recipe_of, scratch_checkpoint,
                             scratch_path, suggested_runtimes)
from ..study.export import export_model, export_sparse
from . import options
from .bars import train_bar


@click.command("compare")
@click.argument("pruned", type=click.Path(path_type=Path))
@click.option("--base", type=click.Path(path_type=Path), default=None,
              help="Base checkpoint (default: the one the pruned model came from).")
@click.option("--scratch/--no-scratch", default=True, show_default=True,
              help="Also train the pruned architecture from scratch with the base recipe (cached).")
@options.out_dir("Where compare.md/compare.csv go (default: next to the pruned model).")
@click.option("--repeats", default=30, show_default=True, help="Timed forwards per model at batch 1.")
@click.option("--runtime", "runtimes", default="eager", show_default=True, metavar="NAMES",
              help="Where latencies are measured, comma-separated: eager (PyTorch), eager-cl (channels-last), "
                   "compile (torch.compile), onnxruntime; `all` is eager, eager-cl and onnxruntime when "
                   "installed (e.g. all,compile); with several, a table per runtime and batch size follows.")
@options.DATA_DIR
def compare_cmd(pruned: Path, base: Path | None, scratch: bool, out_dir: Path | None, repeats: int,
                runtimes: str, data: DataRequest) -> None:
    """Final table on the test split: base vs PRUNED (a checkpoint or run directory) vs from scratch."""
    chosen = list(dict.fromkeys(name for r in runtimes.split(",") if r.strip()
                                for name in (suggested_runtimes() if r.strip() == "all" else [r.strip()])))
    if not chosen:
        raise FmpruneError(f"--runtime {runtimes!r} names no runtime; e.g. --runtime eager,onnxruntime or all")
    check_runtimes(chosen)   # before any data or training
    pruned_path = resolve_model_path(pruned)
    pruned_ckpt = load_checkpoint(pruned_path)
    splits = data.at(pruned_ckpt.input_shape).load()
    base_path = base or Path(pruned_ckpt.origin.get("base_checkpoint") or default_checkpoint_path(splits, 0))
    base_ckpt, pruned_ckpt = load_for_comparison(base_path, pruned_path, splits)
    out_dir = out_dir or pruned_path.parent
    scratch_ckpt = None
    if scratch:
        path = scratch_path(out_dir, pruned_ckpt, recipe_of(base_ckpt))
        cached = path.is_file()
        if not cached:
            click.echo("training the pruned architecture from scratch with the base recipe")
        bar, on_step = train_bar("scratch", disable=cached)   # a cached model shows no empty bar
        with bar:
            scratch_ckpt, path, trained = scratch_checkpoint(base_ckpt, pruned_ckpt, splits, out_dir, on_step)
        click.echo(f"{'trained' if trained else 'using'} from-scratch model {path}")
    comparison = compare_models(base_ckpt, pruned_ckpt, splits, scratch_ckpt, repeats, chosen)
    click.echo(comparison.to_text())
    md, cs = comparison.write(out_dir)
    click.echo(f"written: {md}, {cs}")


@click.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@options.out_dir("Output directory, created if missing (no default: required).", required=True)
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="Also write model.onnx.")
@click.option("--sparse", is_flag=True,
              help="Also write model.sparse.pt: weights in CSR form where smaller (for `fmprune sparsify` models); "
                   "prints its size against dense. Load: fmprune.unstructured.load_sparse(path).build(). "
                   "Default: dense files only.")
def export_cmd(model: Path, out_dir: Path, onnx: bool, sparse: bool) -> None:
    """Write MODEL (a checkpoint or run directory) as model.pt2 (plain PyTorch) and model.onnx."""
    ckpt = load_checkpoint(resolve_model_path(model))
    if sparse:
        packed = export_sparse(ckpt, out_dir)
        stored = packed.stored
        click.echo(f"{stored.path}: {stored.bytes:,} bytes against {stored.dense_bytes:,} dense "
                   f"(x{stored.ratio:.1f} smaller; CSR: {', '.join(stored.csr_tensors) or 'none, no tensor is sparse enough'}); "
                   f"reloaded, max |diff| {packed.max_diff:.2e}")
    result = export_model(ckpt, out_dir, onnx)
    click.echo(f"{result.program}: reloaded with torch.export.load, max |diff| {result.max_diff_program:.2e}")
    if result.onnx is not None:
        click.echo(f"{result.onnx}: run with onnxruntime, max |diff| {result.max_diff_onnx:.2e}")
    click.echo(f"{result.manifest}: input shape, map counts, how to load")


@click.command("score")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--model", "arch", default=None,
              help="Score an architecture instead, no trained weights (default: score PATH).")
@click.option("--input-shape", default=None,
              help="C,H,W of one example, with --model (default: the input the architecture was designed for).")
@click.option("--num-classes", type=click.IntRange(min=1), default=10, show_default=True,
              help="Classes of the output layer, with --model.")
@click.option("--qw", type=int, default=None,
              help="Bits per weight (default: the quantisation run's bits, 32 for a float checkpoint).")
@click.option("--qa", type=int, default=None,
              help="Bits per activation (default: the quantisation run's bits, 32 for a float checkpoint).")
@click.option("--save", is_flag=True,
              help="Write score.json (with the checkpoint's recorded accuracy) for `fmprune report` "
                   "(default: print only).")
@click.option("--label", default=None, help="Label of the saved point (default: the run or file name).")
def score_cmd(path: Path | None, arch: str | None, input_shape: str | None, num_classes: int, qw: int | None,
              qa: int | None, save: bool, label: str | None) -> None:
    """The lab's params+ops efficiency score of PATH (a checkpoint, a pruning run or a quantisation
    run directory) or of an architecture: every input of the formula, both terms and the total."""
    if (path is None) == (arch is None):
        raise FmpruneError("give either PATH (a checkpoint or run directory) or --model NAME --input-shape C,H,W")
    if path is None:
        if save:
            raise FmpruneError("--save needs a checkpoint: an architecture has no accuracy to plot")
        shape = parse_input_shape(input_shape) if input_shape else default_input_shape(arch)
        if shape is None:
            raise FmpruneError(f"{arch} has no default input: give --input-shape C,H,W")
        report = score_model(create_model(arch, shape, num_classes), torch.zeros(1, *shape), qw or 32, qa or 32,
                             sparsity=False)
        click.echo(f"{'model':<12}{arch}, architecture only, input {'x'.join(map(str, shape))}")
        click.echo(format_score(report, "given" if qw or qa else "float, the default"))
        return
    target = score_target(path)
    ckpt = load_checkpoint(target.checkpoint)
    q_w, q_a = qw or target.weight_bits, qa or target.activation_bits
    report = score_checkpoint(ckpt, q_w, q_a)
    source = target.bits_source if (q_w, q_a) == (target.weight_bits, target.activation_bits) else "given"
    click.echo(f"{'model':<12}{ckpt.arch} from {target.checkpoint}, input {'x'.join(map(str, ckpt.input_shape))}")
    click.echo(format_score(report, source))
    if save:
        if target.quantized:
            raise FmpruneError(f"{path}: fmprune quantize already wrote its score.json")
        if (q_w, q_a) != (target.weight_bits, target.activation_bits):
            raise FmpruneError("--save records the accuracy the checkpoint was measured at, in float; "
                               "use `fmprune quantize` to measure and score other bits")
        click.echo(f"written: {save_checkpoint_score(path, target.checkpoint, ckpt, report, label)}")


@click.command("quantize")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(["ptq", "qat"]), default="ptq", show_default=True,
              help="ptq: calibrate only; qat: train through the quantisation (--retrain N).")
@click.option("--bits", type=int, default=8, show_default=True,
              help="Bits of weights and activations: 8 gives a real int8 model (torch.ao, x86 backend); "
                   "2..16 otherwise are fake-quantised (simulated in float).")
@click.option("--weight-bits", type=int, default=None,
              help="Override --bits for the weights (fake quantisation; default: --bits).")
@click.option("--activation-bits", type=int, default=None,
              help="Override --bits for the activations (fake quantisation; default: --bits).")
@click.option("--fake", is_flag=True,
              help="Fake-quantise even at 8 bits, to compare with the real int8 model (default: real int8 at 8 bits).")
@options.calibration("Training images the activation ranges are calibrated on.")
@click.option("--retrain", type=click.IntRange(min=0), default=0, show_default=True,
              help="QAT minibatch iterations (--mode qat).")
@options.retrain_lr("Adam learning rate of QAT.")
@options.retrain_batch("Images per QAT minibatch.")
@options.eval_split(default="test")
@click.option("--onnx/--no-onnx", default=True, show_default=True,
              help="Also write the int8 model as QDQ ONNX and check it in onnxruntime.")
@click.option("--repeats", type=click.IntRange(min=1), default=30, show_default=True,
              help="Timed forwards per model at batch 1 (a third of them at batch 100).")
@options.seed("Seed of the calibration images and QAT batches.")
@options.run_dir("Output directory (default: runs/quantize-<kind>-<mode>).")
@options.DATA_DIR
def quantize_cmd(checkpoint: Path, mode: str, bits: int, weight_bits: int | None, activation_bits: int | None,
                 fake: bool, calibration: int, retrain: int, retrain_lr: float, retrain_batch: int,
                 eval_split: str, onnx: bool, repeats: int, seed: int, run_dir: Path | None,
                 data: DataRequest) -> None:
    """Quantise CHECKPOINT (or a run directory's model.pt); report accuracy, size on disk and
    latency against float, and the efficiency score. The int8 model is TorchScript
    (torch.jit.load, no fmprune needed) and QDQ ONNX."""
    config = QuantizeConfig(mode=mode, weight_bits=weight_bits or bits, activation_bits=activation_bits or bits,
                            fake=fake, calibration=calibration, retrain=retrain, retrain_lr=retrain_lr,
                            retrain_batch=retrain_batch, eval_split=eval_split, onnx=onnx, repeats=repeats,
                            seed=seed)
    config.check()
    ckpt_path = resolve_model_path(checkpoint)
    # a bad checkpoint fails before the data is read
    splits = data.at(load_checkpoint(ckpt_path).input_shape).load()
    run_dir = run_dir or Path("runs") / f"quantize-{config.kind.replace(' ', '-')}-{mode}"
    if mode == "qat":
        bar, on_step = train_bar("qat")
        with bar:
            result = quantize_checkpoint(ckpt_path, splits, config, run_dir, on_step)
    else:
        result = quantize_checkpoint(ckpt_path, splits, config, run_dir)
    click.echo(result.to_text())
    click.echo(f"run directory: {run_dir} ({', '.join(result.files + ['quantize.json', 'score.json'])})")
