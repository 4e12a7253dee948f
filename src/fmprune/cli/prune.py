"""``fmprune prune``: prune a trained model map by map, retraining between steps."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from ..criteria import COSTS, NORMALIZATIONS, REDUCTIONS
from ..data import DataRequest
from ..devices import resolve_device
from ..models.request import ModelRequest
from ..run.base_model import resolve_checkpoint
from ..latency import format_latencies
from ..run.checkpoint import load_checkpoint
from ..runtimes import RUNTIMES
from ..timing import CLOCKS
from ..run.distributed import rank_dir, start as start_distributed
from ..run.loop import PruneConfig, run_pruning
from ..run.rundir import SUMMARY_FILE
from ..run.tensorboard import TensorBoardLogger, chain, resumed_step
from . import options
from .bars import PruneProgress


@click.command("prune")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Trained model (default: the cached default checkpoint, trained if missing).")
@click.option("--criterion", default="taylor", show_default=True, help="One of `fmprune criteria`.")
@click.option("--normalize", type=click.Choice(NORMALIZATIONS), default="rms", show_default=True,
              help="Per-group normalisation of the scores: rms (recommended: keeps more accuracy at a size "
                   "target, docs/quality.md), l2 (the thesis' and Molchanov et al.'s; biased against large "
                   "groups), mean, lamp (each score over the sum of those at or above it: narrow groups are "
                   "not emptied first), l1, none.")
@click.option("--flops-lambda", default=0.0, show_default=True,
              help="FLOPs regularisation λ (Molchanov eq. 9; 0.001 in the paper). 0 disables it.")
@click.option("--scope", default="all", show_default=True,
              help="all, or group names separated by commas (a group is named after its first layer; "
                   "LeNet: conv1, conv2, fc1).")
@click.option("--steps", type=int, default=None, help="Stop after N steps (default: all maps but one per layer).")
@click.option("--maps-per-step", type=float, default=1, show_default=True,
              help="Maps removed per step: an integer, or a fraction (<1) of the maps left in scope.")
@options.calibration("Training images the criterion uses.", kind=None)
@options.eval_split("Split whose accuracy is measured after every step (and read by the stop rules).")
@options.eval_size("Evaluate on the first N images of the split only (default: the whole split).", kind=int)
@click.option("--retrain", type=int, default=0, show_default=True,
              help="Training iterations (minibatches) after each step; 0: no retraining.")
@click.option("--retrain-only-pruned-layer", is_flag=True,
              help="Retrain only the pruned layer's parameters (default: the whole network).")
@options.retrain_lr("Adam learning rate for retraining.")
@options.retrain_batch(kind=None)
@click.option("--rank-once", is_flag=True,
              help="Rank all maps once before the first step, never again (default: rank every step).")
@click.option("--min-accuracy", type=float, default=None,
              help="Stop before accuracy falls under this fraction, keeping the last model above it "
                   "(default: no floor).")
@options.target_params("Stop at this fraction of the base parameters (with --target-macs: once both are met; "
                       "default: no target).")
@options.target_macs("Stop at this fraction of the base MACs (with --target-params: once both are met; "
                     "default: no target).")
@click.option("--final-tune", default=0, show_default=True,
              help="After the last step, train this many iterations (one-cycle Adam) before the final measure.")
@click.option("--final-tune-lr", default=1e-3, show_default=True, help="Peak learning rate of --final-tune.")
@click.option("--distill", default=0.0, show_default=True,
              help="Weight of distillation from the unpruned model in --retrain and --final-tune: the loss is "
                   "(1-W)·cross-entropy + W·T²·KL to its softened output (0: labels only; docs/quality.md).")
@click.option("--distill-temperature", default=4.0, show_default=True, help="Temperature T of --distill.")
@click.option("--save-every", default=10, show_default=True,
              help="Steps between resume states of a retraining run (a killed run continues from there).")
@options.seed("Seed of the calibration images, random scores and retraining batches.")
@click.option("--group-reduction", type=click.Choice(REDUCTIONS), default="sum", show_default=True,
              help="How a group's producers (e.g. the convs tied by a residual add) combine their scores.")
@click.option("--per-cost", type=click.Choice(COSTS), default="none", show_default=True,
              help="Rank maps by score per MACs (or params, or milliseconds from the latency table) their "
                   "removal saves: the greedy answer to a size target (see docs/quality.md, docs/latency.md).")
@click.option("--target-latency", type=float, default=None,
              help="Stop once the latency predicted by the latency table is at most this fraction of the base "
                   "model's (with other targets: once all are met; default: no target; docs/latency.md).")
@click.option("--latency-lambda", default=0.0, show_default=True,
              help="Latency term λ: scores minus λ times the milliseconds one removal saves (like --flops-lambda; "
                   "0 disables it).")
@click.option("--latency-runtime", type=click.Choice(list(RUNTIMES)), default="eager", show_default=True,
              help="Runtime of the latency table (fmprune latency-table; measured once, then cached).")
@click.option("--latency-batch", type=int, default=1, show_default=True, help="Batch size of the latency table.")
@click.option("--latency-clock", type=click.Choice(list(CLOCKS)), default="wall", show_default=True,
              help="Clock of the latency table: wall, or cpu (CPU time of one thread; steadier on a shared machine).")
@click.option("--round-to", type=int, default=None,
              help="Keep every group's size a multiple of N (or its original size): steps remove whole chunks "
                   "(default: 8 when pruning for onnxruntime latency, whose blocked layout runs other widths "
                   "slower than the unpruned model; else 1).")
@options.ignore("Comma-separated modules or graph nodes to keep as they are: their maps are never "
                   "removed (the way past an op fmprune cannot prune through; default: none).")
@options.run_dir("Output directory (default: runs/<criterion>-<normalize>-<scope>).")
@options.tensorboard("Also write TensorBoard event files (accuracy, params, MACs per step) here (default: none).")
@options.quiet("No progress bars (default: bars on stderr).")
@click.option("--distributed", is_flag=True,
              help="Retrain under DistributedDataParallel; launch with torchrun --nproc_per_node N -m fmprune "
                   "prune --distributed ... (gloo on cpu, nccl on cuda; rank 0 writes the run directory; "
                   "default: one process).")
@options.MODEL_OPTIONS
@options.DEVICE
@options.DATA_DIR
def prune_cmd(checkpoint: Path | None, criterion: str, normalize: str, flops_lambda: float, scope: str,
              steps: int | None, maps_per_step: float, calibration: int, eval_split: str,
              eval_size: int | None, retrain: int, retrain_only_pruned_layer: bool, retrain_lr: float,
              retrain_batch: int, rank_once: bool, min_accuracy: float | None,
              target_params: float | None, target_macs: float | None, final_tune: int,
              final_tune_lr: float, distill: float, distill_temperature: float, save_every: int, seed: int,
              group_reduction: str, per_cost: str,
              target_latency: float | None, latency_lambda: float, latency_runtime: str, latency_batch: int,
              latency_clock: str, round_to: int | None, ignore: str,
              run_dir: Path | None, tensorboard_dir: Path | None, quiet: bool, distributed: bool,
              model: ModelRequest, device: str, data: DataRequest) -> None:
    """Prune a trained model map by map; writes run.log, steps.csv, config.json, model.pt.

    Run again with the same options and run directory to resume an interrupted run."""
    config = PruneConfig(
        criterion=criterion, normalize=normalize, flops_lambda=flops_lambda, scope=scope, steps=steps,
        maps_per_step=maps_per_step, calibration=calibration, eval_split=eval_split, eval_size=eval_size,
        seed=seed, retrain=retrain, retrain_only_pruned_layer=retrain_only_pruned_layer,
        retrain_lr=retrain_lr, retrain_batch=retrain_batch, rank_once=rank_once,
        min_accuracy=min_accuracy, target_params=target_params, target_macs=target_macs,
        save_every=save_every, final_tune=final_tune, final_tune_lr=final_tune_lr, distill=distill,
        distill_temperature=distill_temperature,
        group_reduction=group_reduction, per_cost=per_cost, target_latency=target_latency,
        latency_lambda=latency_lambda, latency_runtime=latency_runtime, latency_batch=latency_batch,
        latency_clock=latency_clock, round_to=round_to,
        ignore=options.names(ignore),
    )
    resolve_device(device)   # an unusable device fails before any data is read
    rank = 0
    if distributed:
        rank, _, device = start_distributed(device)
        quiet = quiet or rank > 0
        tensorboard_dir = tensorboard_dir if rank == 0 else None
    shape = load_checkpoint(checkpoint).input_shape if checkpoint is not None else model.input_shape
    splits = data.at(shape).load()
    ckpt_path = resolve_checkpoint(checkpoint, splits, model) if rank == 0 else None
    if distributed:   # rank 0 trains a missing base model; the others then find it cached
        torch.distributed.barrier()
        ckpt_path = ckpt_path or resolve_checkpoint(checkpoint, splits, model)
    run_dir = run_dir or Path("runs") / f"{criterion}-{normalize}-{scope.replace(',', '+')}"
    progress = PruneProgress(quiet)
    hooks = [progress.on_step]
    if tensorboard_dir is not None:
        tb = TensorBoardLogger(tensorboard_dir, prefix="prune/", purge_step=resumed_step(run_dir))
        hooks.append(tb.on_prune_step)
    own_dir = rank_dir(run_dir, rank)
    finished = (own_dir / SUMMARY_FILE).is_file()   # a rerun reports it again, doing nothing
    try:
        summary = run_pruning(ckpt_path, splits, config, own_dir, chain(*hooks), device,
                              progress.on_tune, distributed)
    finally:
        progress.close()
        if tensorboard_dir is not None:
            tb.close()
    if rank > 0:
        return
    if finished:
        click.echo(f"{run_dir} holds this run, finished before: nothing done, its result again")
    click.echo(f"{summary.steps} steps in {summary.seconds:.1f} s ({summary.stop_reason})")
    click.echo(f"{summary.eval_split} accuracy {summary.base_accuracy:.4%} -> {summary.final_accuracy:.4%}")
    click.echo(f"maps left {summary.maps_left}")
    click.echo(f"params {summary.base_params:,} -> {summary.final_params:,} (x{summary.compression:.1f} fewer), "
               f"MACs {summary.base_macs:,} -> {summary.final_macs:,} (x{summary.mac_reduction:.1f} fewer)")
    if "latency" in summary.extra:
        click.echo(format_latencies(summary.extra["latency"]))
    click.echo(f"run directory: {run_dir}")
