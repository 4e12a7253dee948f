"""``fmprune latency-table``: each prunable layer's latency over a grid of widths, measured here."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from ..latency import GRID, latency_table
from ..models.request import ModelRequest
from ..run.checkpoint import load_checkpoint
from ..runtimes import RUNTIMES
from ..timing import CLOCKS
from .models import built_and_traced


@click.command("latency-table")
@click.argument("model")
@click.option("--runtime", type=click.Choice(list(RUNTIMES)), default="eager", show_default=True,
              help="Where the layers run: eager PyTorch, channels-last eager, torch.compile or onnxruntime.")
@click.option("--batch", type=int, default=1, show_default=True, help="Examples per forward.")
@click.option("--grid", default=",".join(f"{g:g}" for g in GRID), show_default=True,
              help="Widths timed, as fractions of each layer's base width (1 always included).")
@click.option("--repeats", type=click.IntRange(min=1), default=20, show_default=True, help="Timed forwards per grid point.")
@click.option("--clock", type=click.Choice(list(CLOCKS)), default="wall", show_default=True,
              help="wall, or cpu: the process's CPU time (one thread: steadier on a shared machine).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads torch computes with (default: torch's own).")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda[:N] (eager runtimes only).")
@click.option("--input-shape", default=None, metavar="C,H,W",
              help="Input image shape (default: the zoo entry's, e.g. 1,28,28 for lenet).")
@click.option("--num-classes", type=click.IntRange(min=1), default=None, help="Classes of the output layer (default: 10).")
@click.option("--refresh", is_flag=True, help="Measure again even when the table is cached (default: read the cache).")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr (default: one line per layer timed).")
def latency_table_cmd(model: str, runtime: str, batch: int, grid: str, repeats: int, clock: str,
                      threads: int | None, device: str, input_shape: str | None, num_classes: int | None,
                      refresh: bool, quiet: bool) -> None:
    """Time every prunable layer of MODEL (a zoo name, torchvision:NAME, FILE.py:factory, or a
    checkpoint .pt) over a grid of (input, output) widths; print the table and its noise. Tables
    are cached (by model, runtime, batch, device, torch version) for `fmprune prune
    --target-latency`."""
    if threads is not None:
        torch.set_num_threads(threads)
    if Path(model).is_file() or model.endswith(".pt"):   # a checkpoint: its (possibly pruned) architecture
        checkpoint = load_checkpoint(Path(model))
        net, graph = checkpoint.build_traced()
        name = checkpoint.arch
    else:
        spec = ModelRequest.from_options(model, (), input_shape, num_classes).spec()
        net, graph = built_and_traced(spec)
        name = spec.name

    def progress(done: int, total: int, layer: str) -> None:
        if not quiet:
            click.echo(f"timing {layer} ({done + 1}/{total + 1})" if done < total else f"timing {layer}", err=True)
    table = latency_table(net, graph, name, runtime, batch, device, grid, repeats, clock=clock, refresh=refresh,
                          progress=progress)
    click.echo(table.format())
