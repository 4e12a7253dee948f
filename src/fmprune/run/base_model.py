"""Which trained base model a command starts from: a given checkpoint, the one cached for these
data (trained now with the model's default recipe when missing), or an experiment or tune file's
``checkpoint`` entry. Commands, sweeps and benchmarks share these rules, so a base model trained
once is found again by all of them."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path

import torch

from ..data import Splits, fmprune_home
from ..errors import FmpruneError
from ..models.request import ModelRequest
from ..models.spec import ModelSpec
from ..progress import progress, write_line
from ..training import Recipe, default_recipe, steps_per_epoch, train_model
from .checkpoint import Checkpoint, load_checkpoint, make_checkpoint, resolve_model_path, save_checkpoint
from .tensorboard import TensorBoardLogger, chain

QUICK_TRAIN_ITERS = 20   # --quick sweeps train their base model this many minibatches at most


def default_checkpoint_path(splits: Splits, seed: int, spec: ModelSpec | None = None) -> Path:
    """The cached checkpoint of ``spec`` (default: LeNet) trained on these data with ``seed``."""
    slug = "lenet" if spec is None else spec.slug()
    return fmprune_home() / "checkpoints" / f"{slug}-{splits.fingerprint()}-seed{seed}.pt"


def trained_checkpoint_path(splits: Splits, seed: int, spec: ModelSpec, bn_l1: float | None = None,
                            weights: Path | None = None, freeze_features: bool = False) -> Path:
    """Where `fmprune train` saves by default: the cached checkpoint of ``spec``, named apart when
    the training is not the model's plain recipe (a BatchNorm L1 term, starting weights, the head
    only), so it never stands in for the base model the other commands default to."""
    out = default_checkpoint_path(splits, seed, spec)
    if bn_l1:
        out = out.with_name(f"{out.stem}-bnl1-{bn_l1:g}{out.suffix}")
    if weights is not None or freeze_features:
        out = out.with_name(f"{out.stem}{f'-from-{weights.stem}' if weights else ''}"
                            f"{'-head-only' if freeze_features else ''}{out.suffix}")
    return out


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
    if not quiet:   # before minutes of training: what is trained on what (an image folder's size is chosen)
        write_line(f"training {spec.describe()} on {splits.name or splits.source}: {len(splits.train):,} "
                   f"images, {recipe.iterations(len(splits.train)):,} iterations")
    bars = TrainProgress(len(splits.train), recipe, quiet)
    tb = TensorBoardLogger(tensorboard, prefix="train/") if tensorboard else None
    try:
        trained = train_model(spec, splits, recipe, device, chain(bars.on_step, tb and tb.on_train_step),
                              chain(bars.on_epoch, tb and tb.on_train_epoch), weights, freeze_features)
    finally:
        bars.close()
        if tb:
            tb.close()
    ckpt = make_checkpoint(trained.model, trained.spec, data_fingerprint=splits.fingerprint(),
                           accuracies=trained.accuracies, seed=recipe.seed,
                           recipe={**trained.recipe, "data": splits.name, "input": splits.input_note})
    save_checkpoint(ckpt, out)
    epochs = bars.done / bars.per_epoch
    write_line(f"trained {trained.spec.describe()} in {trained.seconds:.0f} s ({trained.seconds / epochs:.1f} s per "
               f"epoch): validation accuracy {trained.accuracies['val']:.4%}, test accuracy "
               f"{trained.accuracies['test']:.4%}")
    write_line(f"checkpoint: {out}")
    return ckpt


def resolve_checkpoint(checkpoint: Path | None, splits: Splits, model: ModelRequest | None = None) -> Path:
    """The given checkpoint, or the cached one of ``model`` (default LeNet) on these data, trained
    now with the model's default recipe if missing."""
    if checkpoint is not None:
        if model is not None and model.explicit:
            raise FmpruneError("give either --checkpoint (it records its model) or --model, not both")
        return resolve_model_path(checkpoint)   # a run directory: its model.pt, recorded as such
    spec = model.spec(splits.input_shape, splits.n_classes) if model is not None and model.explicit else None
    path = default_checkpoint_path(splits, 0, spec)
    if path.is_file():
        write_line(f"using cached checkpoint {path}")
    else:
        write_line("no trained checkpoint cached yet: training one first")
        name = spec.name if spec is not None else "lenet"
        train_checkpoint(splits, default_recipe(name), path, spec)
    return path


def cached_checkpoint(name: str, splits: Splits, model: ModelRequest | None = None) -> Path:
    """The checkpoint `fmprune train --model NAME` cached for these data (seed 0), or one line
    saying how to make it."""
    spec = (model or ModelRequest(name)).spec(splits.input_shape, splits.n_classes)
    path = default_checkpoint_path(splits, 0, spec)
    if not path.is_file():
        raise FmpruneError(f"no cached {name} checkpoint for these data ({path}): run "
                           f"`fmprune train --model {name}` first, or pass --checkpoint FILE")
    return path


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


def recipe_checkpoint(name: str, splits: Splits, options: dict, quick: bool = False) -> Path:
    """The base model of an experiment with ``checkpoint = "train:NAME"``: `fmprune train --model
    NAME` with the ``[train]`` options, trained now unless cached; options other than the model's
    defaults go into the cached file's name, so it never stands in for the default checkpoint."""
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
        write_line(f"using cached checkpoint {path}")
    else:
        write_line(f"training the experiment's base model ({name}, "
                   f"{', '.join(f'{k}={v}' for k, v in options.items()) or 'default recipe'})")
        train_checkpoint(splits, recipe, path, spec)
    return path
