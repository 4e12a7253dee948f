"""``fmprune train``: train a base model to prune."""

from __future__ import annotations

from pathlib import Path

import click

from ..data import DataRequest
from ..devices import resolve_device
from ..errors import FmpruneError
from ..models.request import ModelRequest
from ..models.weights import require_file
from ..run.base_model import train_checkpoint, trained_checkpoint_path
from ..run.tensorboard import require_tensorboard
from ..training import default_recipe
from . import options


def parse_augment(text: str | None) -> tuple[str, ...] | None:
    """``--augment``: None when not given, () for none, else the names."""
    if text is None:
        return None
    names = tuple(a.strip() for a in text.split(",") if a.strip())
    return () if names in ((), ("none",)) else names


@click.command("train")
@options.MODEL_OPTIONS
@click.option("--out", type=click.Path(path_type=Path), default=None, callback=options.output_file,
              help="Checkpoint path (default: in the cache, named by model, data fingerprint and seed).")
@options.seed("Seed of the initial weights and the batch order.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Passes over the training split (default: 4 for lenet, 20 for fc, 200 for the others).")
@click.option("--max-iters", type=click.IntRange(min=1), default=None,
              help="Stop after N minibatches, the schedule ending there too (quick runs; default: no limit).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per minibatch (default: 100 for lenet and fc, 128 for the others).")
@click.option("--lr", type=float, default=None,
              help="Peak learning rate (default: 0.002 for lenet's one-cycle Adam, 0.05 for fc, 0.1 for the "
                   "others' cosine SGD).")
@click.option("--weight-decay", type=float, default=None,
              help="Weight decay (default: 0 for lenet and fc, 5e-4 for the others).")
@click.option("--augment", default=None, metavar="LIST",
              help="SGD recipe: crop,flip, crop, flip or none (default: what suits the data: crop,flip for "
                   "CIFAR, none for digits).")
@click.option("--input-norm/--no-input-norm", default=None,
              help="SGD recipe: normalise inputs by the training images' per-channel mean/std, as the "
                   "model's first layer (default: on).")
@click.option("--amp/--no-amp", default=None, help="SGD recipe on CUDA: bfloat16 autocast (default: on).")
@click.option("--channels-last/--no-channels-last", default=None,
              help="SGD recipe on CUDA: channels-last tensors (default: on).")
@click.option("--bn-l1", type=click.FloatRange(min=0), default=None, metavar="LAMBDA",
              help="Network slimming (Liu et al. 2017): add LAMBDA * sum |gamma| over every BatchNorm scale to the "
                   "loss (1e-4 to 1e-5 in the paper), then prune with --criterion slimming (default: 0, none).")
@click.option("--weights", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Start from this local state dict (e.g. torchvision's ImageNet weights for torchvision:vgg16; "
                   "nothing is downloaded); a classifier of another class count is replaced by a fresh "
                   "--num-classes head (default: random initial weights).")
@click.option("--freeze-features", is_flag=True,
              help="Train only the classifier (the model's classifier/fc/head block, else its output layer), "
                   "as in transfer learning (default: train every layer).")
@options.tensorboard("Write TensorBoard event files (loss per iteration, validation accuracy per epoch) to this "
                     "directory; needs the tensorboard extra (default: none).", check_dir=True)
@options.quiet("No progress bars (default: shown).")
@options.DEVICE
@options.DATA_DIR
def train_cmd(model: ModelRequest, out: Path | None, seed: int, epochs: int | None, max_iters: int | None,
              batch_size: int | None, lr: float | None, weight_decay: float | None, augment: str | None,
              input_norm: bool | None, amp: bool | None, channels_last: bool | None, bn_l1: float | None,
              weights: Path | None, freeze_features: bool, quiet: bool,
              tensorboard_dir: Path | None, device: str, data: DataRequest) -> None:
    """Train a model on the training split; report validation and test accuracy.

    lenet trains with the thesis' recipe (Adam, one-cycle learning rate, 4 epochs). Every other
    model (zoo, torchvision, your own) trains with SGD, Nesterov momentum 0.9, weight decay 5e-4,
    a cosine schedule, batch 128, 200 epochs, crop+flip augmentation on CIFAR, inputs normalised
    by a first layer of the model."""
    torch_device = resolve_device(device)
    if tensorboard_dir:
        require_tensorboard()   # before the data and the training, not after
    if weights is not None:
        require_file(weights, model.name)   # before the data and the training
    splits = data.at(model.input_shape).load()
    spec = model.spec(splits.input_shape, splits.n_classes)
    recipe = default_recipe(spec.name, seed=seed, epochs=epochs, max_iters=max_iters, batch_size=batch_size,
                            lr=lr, weight_decay=weight_decay, augment=parse_augment(augment),
                            normalize=input_norm, amp=amp, channels_last=channels_last, bn_l1=bn_l1)
    if recipe.batch_size > len(splits.train):
        raise FmpruneError(f"--batch-size {recipe.batch_size} is larger than the {len(splits.train):,} training "
                           "images; choose a smaller one")
    out = out or trained_checkpoint_path(splits, seed, spec, bn_l1, weights, freeze_features)
    train_checkpoint(splits, recipe, out, spec, torch_device, quiet, tensorboard_dir, weights, freeze_features)
