"""``fmprune sparsify``: weight or unit pruning (Han et al. 2015), the unstructured baseline."""

from __future__ import annotations

from pathlib import Path

import click

from ..data import DataRequest
from ..devices import resolve_device
from ..errors import FmpruneError
from ..models.request import ModelRequest
from ..run.base_model import cached_checkpoint, resolve_checkpoint
from ..run.checkpoint import load_checkpoint
from ..unstructured import METHODS as SPARSIFY_METHODS, RoundRecord, SparsifyConfig, run_sparsify
from . import options


@click.command("sparsify")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Trained model (default: the cached default LeNet checkpoint, trained if missing).")
@click.option("--method", type=click.Choice(SPARSIFY_METHODS), default="magnitude", show_default=True,
              help="magnitude: zero the smallest |w|; random: as many weights at random (seeded); "
                   "unit: remove the units/filters with the smallest L2 norm (never the output layer).")
@click.option("--scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True,
              help="layer: the amount of each layer; global: the amount of all layers together.")
@click.option("--amount", type=float, required=True,
              help="Fraction K in [0, 1) of the weights (units) pruned: exactly round(K * size).")
@click.option("--layers", default=None, metavar="A,B",
              help="Only these layers (default: every Linear/Conv layer, the output layer included, for "
                   "weight pruning; every prunable group for unit pruning).")
@click.option("--retrain", type=click.IntRange(min=0), default=0, show_default=True,
              help="Training iterations (minibatches) after each round, masks held; 0: none.")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Reach the amount in R equal steps (Han et al.); needs --retrain.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
              help="Retraining optimizer (sgd: momentum 0.9, as Han et al.).")
@options.retrain_lr("Learning rate for retraining.")
@options.retrain_batch()
@options.eval_split()
@options.eval_size("Evaluate on the first N images of the split only (default: all).")
@options.seed("Seed of random selection, batch order and dropout.")
@options.run_dir("Output directory (default: runs/sparsify-<method>-<scope>-<amount>).")
@options.MODEL_OPTIONS
@options.DEVICE
@options.DATA_DIR
def sparsify_cmd(checkpoint: Path | None, method: str, scope: str, amount: float, layers: str | None,
                 retrain: int, rounds: int, optimizer: str, retrain_lr: float, retrain_batch: int,
                 eval_split: str, eval_size: int | None, seed: int, run_dir: Path | None,
                 model: ModelRequest, device: str, data: DataRequest) -> None:
    """Weight or unit pruning (Han et al. 2015): zero the smallest weights, or remove the weakest
    units; writes model.pt (a plain model), config.json, summary.json and run.log."""
    config = SparsifyConfig(method=method, scope=scope, amount=amount, layers=layers, retrain=retrain,
                            rounds=rounds, optimizer=optimizer, retrain_lr=retrain_lr, retrain_batch=retrain_batch,
                            eval_split=eval_split, eval_size=eval_size, seed=seed)
    resolve_device(device)
    given = load_checkpoint(checkpoint) if checkpoint is not None else None
    if given is not None and model.explicit and given.arch != model.name:
        raise FmpruneError(f"{checkpoint} holds a {given.arch} model, not --model {model.name}")
    splits = data.at(given.input_shape if given is not None else model.input_shape).load()
    if checkpoint is None and model.name != "lenet":
        checkpoint = cached_checkpoint(model.name, splits, model)
    ckpt_path = resolve_checkpoint(checkpoint, splits)
    run_dir = run_dir or Path("runs") / f"sparsify-{method}-{scope}-{amount:g}"

    def on_round(record: RoundRecord, total: int) -> None:
        retrained = f", retrained {record.accuracy:.4%}" if retrain else ""
        click.echo(f"round {record.round}/{total}: {record.amount:.2%} pruned, non-zero weights "
                   f"{record.nonzero:,}, accuracy {record.accuracy_pruned:.4%}{retrained}")

    summary = run_sparsify(ckpt_path, splits, config, run_dir, device, on_round)
    click.echo(f"{summary.eval_split} accuracy {summary.base_accuracy:.4%} -> {summary.final_accuracy:.4%}")
    click.echo(f"non-zero weights {summary.nonzero_before:,} -> {summary.nonzero_after:,} of {summary.weights:,} "
               f"({summary.density:.2%} density)")
    if summary.params_after != summary.params_before:
        click.echo(f"params {summary.params_before:,} -> {summary.params_after:,}; units left {summary.units_after}")
    click.echo(f"run directory: {run_dir} ({summary.seconds:.1f} s)")
