"""``fmprune models``, ``criteria`` and ``count``: what can be pruned, by what, and what it costs."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from ..costs import format_cost_table, format_group_table
from ..criteria import Criterion, available_criteria
from ..graph import Graph, trace as trace_graph
from ..models import available_zoo, check_output, torchvision_classifiers
from ..models.request import ModelRequest
from ..models.spec import ModelSpec, build_model
from ..run.checkpoint import load_checkpoint
from ..unstructured import format_density_table, is_sparse, weight_density
from .options import MODEL_OPTIONS


def built_and_traced(spec: ModelSpec) -> tuple[torch.nn.Module, Graph]:
    """The dense model of ``spec`` in eval mode and its graph (count, latency-table); an input the
    model cannot take is one line, before torch.fx prints a trace."""
    net = build_model(spec).eval()
    check_output(net, spec)
    return net, trace_graph(net, torch.zeros(1, *spec.input_shape))


@click.command("models")
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


@click.command("criteria")
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


@click.command("count")
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
        _, graph = built_and_traced(base)
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

