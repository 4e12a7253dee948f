"""``fmprune sensitivity`` and ``oneshot``: the one-shot baselines (Li et al. 2017, ThiNet,
network slimming) and the per-layer sensitivity scan that sets their ratios."""

from __future__ import annotations

from pathlib import Path

import click

from ..baselines.oneshot import OneShotConfig, run_oneshot
from ..baselines.plan import format_ratios
from ..baselines.sensitivity import (CSV_FILE, RESULT_FILE, check_ratios, format_table, layer_sensitivity, load_result,
                                     save_csv, save_result)
from ..criteria import create_criterion
from ..data import DataRequest, calibration_subset
from ..devices import resolve_device
from ..errors import FmpruneError
from ..progress import progress
from ..run.checkpoint import load_checkpoint, resolve_model_path
from ..study.sensitivity_plot import plot_sensitivity
from . import options


@click.command("sensitivity")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--criterion", default="l1_filter", show_default=True,
              help="What ranks each layer's maps (lowest pruned first): one of `fmprune criteria`.")
@click.option("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", show_default=True, metavar="LIST",
              help="Fractions of each layer's maps pruned, one measurement each.")
@options.scope()
@options.eval_split("Split the accuracy is measured on.")
@options.eval_size("Measure on the first N images of the split only (default: the whole split).")
@options.calibration("Training images a data-driven criterion (taylor, thinet, ...) reads.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=None,
              help="Also derive per-layer ratios: the largest ratio each layer takes while losing at most this "
                   "accuracy (e.g. 0.01), printed as --ratios for `fmprune oneshot` (default: none).")
@options.seed("Seed of the calibration images.")
@options.out_dir("Where sensitivity.json, sensitivity.csv and the figure go (default: "
                 "runs/sensitivity-<criterion>).")
@options.quiet("No progress bar (default: shown).")
@options.DATA_DIR
def sensitivity_cmd(checkpoint: Path, criterion: str, ratios: str, scope: str, eval_split: str,
                    eval_size: int | None, calibration: int, max_drop: float | None, seed: int,
                    out_dir: Path | None, quiet: bool, data: DataRequest) -> None:
    """Prune each layer of CHECKPOINT alone at every ratio, without retraining, and plot accuracy
    against the fraction pruned (Li et al. 2017's sensitivity analysis)."""
    try:
        fractions = check_ratios([float(r) for r in ratios.split(",") if r.strip()])
    except ValueError:
        raise FmpruneError(f"--ratios {ratios!r}: give fractions separated by commas, e.g. 0.1,0.5,0.9") from None
    crit = create_criterion(criterion)
    ckpt_path = resolve_model_path(checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    splits = data.at(ckpt.input_shape).load()
    if tuple(splits.input_shape) != tuple(ckpt.input_shape):
        raise FmpruneError(f"data images have shape {tuple(splits.input_shape)}, the checkpoint's model expects "
                           f"{tuple(ckpt.input_shape)}: pass the --data-dir it was trained on")
    _, graph = ckpt.build_traced()
    names = graph.scope(scope)
    out_dir = out_dir or Path("runs") / f"sensitivity-{criterion}"
    evaluation = getattr(splits, eval_split).subset(eval_size)
    with progress(total=len(names) * len(fractions), desc="sensitivity", unit="point", disable=quiet) as bar:
        def on_point(layer: str, ratio: float, accuracy: float) -> None:
            bar.update(1)
            bar.set_postfix(layer=layer, ratio=f"{ratio:g}", acc=f"{accuracy:.4f}", refresh=False)
        result = layer_sensitivity(graph, crit, evaluation, calibration_subset(splits.train, calibration, seed),
                                   fractions, names, seed, on_point, str(ckpt_path), eval_split)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_result(result, out_dir / RESULT_FILE)
    save_csv(result, out_dir / CSV_FILE)
    figure = plot_sensitivity(result, out_dir / "sensitivity")[0]
    click.echo(format_table(result))
    if max_drop is not None:
        derived = result.pruned_within(max_drop)
        if derived:
            click.echo(f"ratios losing at most {max_drop:g} accuracy: --ratios {format_ratios(derived)}")
        else:
            click.echo(f"no layer keeps its accuracy within {max_drop:g} at {result.ratios[0]:g}: raise --max-drop")
    click.echo(f"written: {out_dir / RESULT_FILE}, {out_dir / CSV_FILE}, {figure}")


@click.command("oneshot")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--criterion", default="l1_filter", show_default=True,
              help="What ranks the maps: one of `fmprune criteria` (l1_filter: Li et al.; thinet: Luo et al., "
                   "layer after layer with a least-squares rescale; slimming: BatchNorm |gamma|, with --global).")
@click.option("--ratio", type=float, default=None,
              help="Fraction of each layer's maps removed (with --global: of all maps in scope; default: none).")
@click.option("--ratios", default=None, metavar="LAYER=R,...",
              help="A fraction per layer, e.g. conv1=0.3,conv2=0.5; layers not named keep all (default: none).")
@click.option("--sensitivity", "sensitivity_file", type=click.Path(path_type=Path), default=None,
              help="Per-layer ratios from `fmprune sensitivity` (its sensitivity.json or directory): the largest "
                   "each layer takes within --max-drop (default: none).")
@click.option("--max-drop", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Accuracy a layer may lose at its ratio, with --sensitivity.")
@click.option("--threshold", type=float, default=None,
              help="With --global: remove every map whose raw score is below this (slimming's |gamma| rule; "
                   "default: none).")
@options.target_macs("Remove the smallest ratio (per layer, or global with --global) that leaves at most this "
                     "fraction of the MACs (default: none).")
@options.target_params("The same for the parameters (default: none).")
@click.option("--global", "global_ranking", is_flag=True,
              help="Rank every map of the scope together by raw score instead of layer by layer (default: per layer).")
@options.scope()
@options.calibration("Training images a data-driven criterion reads.")
@click.option("--samples-per-image", type=click.IntRange(min=1), default=10, show_default=True,
              help="ThiNet: sampled entries of the next layer's output per calibration image.")
@click.option("--rescale/--no-rescale", default=True, show_default=True,
              help="ThiNet: rescale the kept maps' weights in the next layer by least squares.")
@click.option("--retrain", type=click.IntRange(min=0), default=0, show_default=True,
              help="Minibatch updates after pruning (Adam, one-cycle learning rate); 0: none.")
@options.retrain_lr("Peak learning rate of --retrain.", default=1e-3)
@options.retrain_batch()
@options.eval_split()
@options.eval_size("Measure on the first N images of the split only (default: the whole split).")
@options.seed("Seed of the calibration images, samples and batches.")
@options.ignore("Comma-separated modules or graph nodes kept as they are (default: none).")
@options.run_dir("Output directory (default: runs/oneshot-<criterion>).")
@options.quiet("No progress bar while retraining (default: shown).")
@options.DEVICE
@options.DATA_DIR
def oneshot_cmd(checkpoint: Path, criterion: str, ratio: float | None, ratios: str | None,
                sensitivity_file: Path | None, max_drop: float, threshold: float | None, target_macs: float | None,
                target_params: float | None, global_ranking: bool, scope: str, calibration: int,
                samples_per_image: int, rescale: bool, retrain: int, retrain_lr: float, retrain_batch: int,
                eval_split: str, eval_size: int | None, seed: int, ignore: str, run_dir: Path | None, quiet: bool,
                device: str, data: DataRequest) -> None:
    """Prune CHECKPOINT once — every layer at its ratio, or a global ranking — then retrain
    (Li et al. 2017's protocol; ThiNet and network slimming too). Writes model.pt, summary.json
    and score.json."""
    if sensitivity_file is not None:
        if ratios:
            raise FmpruneError("give either --ratios or --sensitivity, not both")
        derived = load_result(sensitivity_file).pruned_within(max_drop)
        if not derived:
            raise FmpruneError(f"{sensitivity_file}: no layer keeps its accuracy within --max-drop {max_drop:g}; raise it")
        ratios = format_ratios(derived)
    config = OneShotConfig(
        criterion=criterion, ratio=ratio, ratios=ratios or "", threshold=threshold, target_macs=target_macs,
        target_params=target_params, global_ranking=global_ranking, scope=scope, calibration=calibration,
        samples_per_image=samples_per_image, rescale=rescale, retrain=retrain, retrain_lr=retrain_lr,
        retrain_batch=retrain_batch, eval_split=eval_split, eval_size=eval_size, seed=seed,
        ignore=options.names(ignore))
    resolve_device(device)
    ckpt_path = resolve_model_path(checkpoint)
    # a bad checkpoint fails before the data is read
    splits = data.at(load_checkpoint(ckpt_path).input_shape).load()
    run_dir = run_dir or Path("runs") / f"oneshot-{criterion}"
    bar = progress(total=retrain, desc="retrain", unit="it", disable=quiet or not retrain)
    with bar:
        summary = run_oneshot(ckpt_path, splits, config, run_dir, device, lambda step, total, loss: bar.update(1))
    click.echo(f"{summary.criterion} one-shot, {summary.how}")
    click.echo(f"{summary.eval_split} accuracy {summary.base_accuracy:.4%} -> {summary.pruned_accuracy:.4%} pruned"
               + (f" -> {summary.final_accuracy:.4%} after {summary.retrain} retraining iterations" if summary.retrain else ""))
    click.echo(f"maps left {summary.maps_after}")
    click.echo(f"params {summary.base_params:,} -> {summary.final_params:,} (x{summary.base_params / summary.final_params:.1f} "
               f"fewer), MACs {summary.base_macs:,} -> {summary.final_macs:,} "
               f"(x{summary.base_macs / summary.final_macs:.1f} fewer)")
    click.echo(f"run directory: {run_dir} (model.pt, summary.json, score.json)")
