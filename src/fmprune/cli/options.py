"""Options several commands share, declared once: the data, model and device options, and
factories for the ones whose meaning is shared but whose help says what they do in that command
(``--seed`` seeds different things in ``train`` and ``prune``)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import click
from click.core import ParameterSource

from ..data import CORRUPT_POLICIES, DataRequest
from ..models.request import ModelRequest

Decorator = Callable[[Callable], Callable]


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
    """``--data-dir`` and ``--corrupt-images``, handed to the command as one ``data: DataRequest``
    (``data.at(model_input_shape).load()`` reads it; sweeps hand the same request to their workers)."""
    @functools.wraps(command)
    def wrapper(*args, data_dir: Path | None, corrupt_images: str | None, **kwargs):
        return command(*args, data=DataRequest.of(data_dir).with_corrupt(corrupt_images), **kwargs)

    return _DATA_DIR_OPTION(_CORRUPT_OPTION(wrapper))


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


# Shared options whose help differs per command: one declaration, the command's own words.

def seed(text: str) -> Decorator:
    return click.option("--seed", default=0, show_default=True, help=text)


def out_dir(text: str, default: Path | None = None, required: bool = False) -> Decorator:
    """``--out-dir``: an existing file in its place fails before any work."""
    shown: dict[str, Any] = {"show_default": True} if default is not None else {}
    extra: dict[str, Any] = {"required": True} if required else {"default": default}
    return click.option("--out-dir", type=click.Path(path_type=Path), **extra, **shown,
                        callback=output_dir, help=text)


def run_dir(text: str) -> Decorator:
    return click.option("--run-dir", type=click.Path(path_type=Path), default=None, callback=output_dir, help=text)


def eval_split(text: str = "Split the accuracies are measured on.", default: str = "val") -> Decorator:
    return click.option("--eval-split", type=click.Choice(["val", "test"]), default=default, show_default=True,
                        help=text)


def eval_size(text: str, kind: click.ParamType | type = click.IntRange(min=1)) -> Decorator:
    return click.option("--eval-size", type=kind, default=None, help=text)


def quiet(text: str) -> Decorator:
    return click.option("--quiet", is_flag=True, help=text)


def calibration(text: str, kind: click.ParamType | None = click.IntRange(min=1)) -> Decorator:
    typed: dict[str, Any] = {"type": kind} if kind is not None else {}
    return click.option("--calibration", **typed, default=1000, show_default=True, help=text)


def retrain_lr(text: str, default: float = 1e-4) -> Decorator:
    return click.option("--retrain-lr", default=default, show_default=True, help=text)


def retrain_batch(text: str = "Images per retraining minibatch.",
                  kind: click.ParamType | None = click.IntRange(min=1)) -> Decorator:
    typed: dict[str, Any] = {"type": kind} if kind is not None else {}
    return click.option("--retrain-batch", **typed, default=100, show_default=True, help=text)


def target_params(text: str) -> Decorator:
    """``--target-params``: a fraction of the base model's parameters (checked by validate.py)."""
    return click.option("--target-params", type=float, default=None, help=text)


def target_macs(text: str) -> Decorator:
    """``--target-macs``: a fraction of the base model's MACs (checked by validate.py)."""
    return click.option("--target-macs", type=float, default=None, help=text)


def scope(text: str = "all, or comma-separated layers (groups).") -> Decorator:
    return click.option("--scope", default="all", show_default=True, help=text)


def ignore(text: str) -> Decorator:
    return click.option("--ignore", default="", metavar="NAMES", help=text)


def ray(text: str) -> Decorator:
    return click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                        help=text)


def tensorboard(text: str, check_dir: bool = False) -> Decorator:
    checked: dict[str, Any] = {"callback": output_dir} if check_dir else {}
    return click.option("--tensorboard", "tensorboard_dir", type=click.Path(path_type=Path), default=None,
                        **checked, help=text)


FILE_CHECKPOINT = click.option(
    "--checkpoint", type=click.Path(path_type=Path), default=None,
    help="Override the file's base checkpoint (default: the file's `checkpoint`, else the cached one).")


def names(text: str) -> tuple[str, ...]:
    """A comma-separated option (``--ignore a,b``) as its non-empty names."""
    return tuple(n.strip() for n in text.split(",") if n.strip())
