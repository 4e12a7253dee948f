"""Size and cost of a model: parameters, MACs (multiply-accumulates; the thesis calls them
FLOPs), serialized bytes, and measured CPU latency."""

from __future__ import annotations

import io
import statistics

import torch
from torch import nn

from .graph import LayerCost
from .graph.trace import attention_tokens
from .layers import LayerAdapter, MultiheadAttentionAdapter, adapter_for   # adapters know their own cost
from .modes import eval_mode
from .runtimes import prepare
from .timing import time_runners


def count_params(model: nn.Module) -> int:
    """All parameters of the model (weights, biases, norm affines)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_inputs) -> int:
    """Multiply-accumulates per example of one forward, counted by the layer adapters (conv,
    linear, attention, ... as in ``fmprune count``) with hooks: works on any model, traceable or
    not. A layer with an adapter counts everything it computes (``nn.MultiheadAttention``: its
    projections, scores and weighted values), so modules inside it (its out_proj) are not
    counted again, as the traced graph keeps such a layer whole."""
    total = 0
    examples = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)

    def count(module, args, kwargs, output):
        nonlocal total
        total += _call_macs(module, adapter_for(module), args, kwargs, output)
    hooks = [m.register_forward_hook(count, with_kwargs=True) for m in _outermost_layers(model)]
    try:
        with eval_mode(model), torch.no_grad():
            model(*examples)
    finally:
        for h in hooks:
            h.remove()
    return total   # the adapters count per example


def _outermost_layers(model: nn.Module) -> list[nn.Module]:
    """Modules with an adapter that are not inside another one."""
    out: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        if adapter_for(module) is not None:
            out.append(module)
            return
        for child in module.children():
            visit(child)
    visit(model)
    return out


def _call_macs(module: nn.Module, adapter: LayerAdapter, args: tuple, kwargs: dict, output) -> int:
    """MACs per example of one call of a layer, from its adapter's cost at the call's shapes
    (the batch first, as the traced graph's costs count; attention knows its own layout)."""
    if isinstance(adapter, MultiheadAttentionAdapter):
        query, key = (args[i] if len(args) > i else kwargs[k] for i, k in enumerate(("query", "key")))
        tokens = (attention_tokens(tuple(query.shape), module), attention_tokens(tuple(key.shape), module))
        return adapter.cost(module, tokens, query.shape[-1], module.out_proj.out_features)[1]
    if not (torch.is_tensor(output) and args and torch.is_tensor(args[0])):
        return 0
    x = args[0]
    if adapter.acts_on_channels(module, x.dim()):
        n_in = x.shape[1] if x.dim() > 1 else x.shape[0]
        n_out = output.shape[1] if output.dim() > 1 else output.shape[0]
        return adapter.cost(module, tuple(output.shape), n_in, n_out)[1]
    rows = x.numel() // x.shape[0] // x.shape[-1]   # e.g. a Linear over the last axis: per row, times the rows
    return rows * adapter.cost(module, (1, output.shape[-1]), x.shape[-1], output.shape[-1])[1]


def model_bytes(model: nn.Module) -> int:
    """Size of the serialized state dict, what a deployed model weighs on disk."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def measure_latencies(models: list[nn.Module], input_shape: tuple[int, ...], batch: int,
                      repeats: int = 30, warmup: int = 5, runtime: str = "eager",
                      runners: list | None = None) -> list[float]:
    """Median seconds of one eval forward of ``batch`` examples on the CPU, for each model, in
    ``runtime`` (see :mod:`fmprune.runtimes`; ``runners`` from ``runtimes.prepare`` skip the
    export/compilation when several batch sizes are timed).

    The models take turns within every repeat, so drifts of a noisy machine (other processes,
    frequency changes) hit all of them alike and their ratios stay fair."""
    runners = runners if runners is not None else prepare(models, runtime, input_shape)
    x = torch.rand(batch, *input_shape)
    return [statistics.median(t) for t in time_runners(runners, [x] * len(runners), repeats, warmup)]


def format_cost_table(costs: list[LayerCost], alive: dict[str, tuple[int, int]] | None = None) -> str:
    """The per-layer table ``fmprune count`` prints; totals are the sums of the rows. ``alive``
    (layer -> (maps now, maps unpruned)) adds the maps left of a pruned model."""
    width = max([8] + [len(c.name) + 2 for c in costs])
    head = f"{'layer':<{width}}{'maps':>7}{'weights':>13}{'biases':>9}{'params':>13}{'MACs':>14}"
    if alive:
        head += f"{'unpruned':>10}"
    lines = [head, "-" * len(head)]
    for c in costs:
        maps = f"{c.maps:>7}" if c.maps is not None else f"{'-':>7}"
        row = f"{c.name:<{width}}{maps}{c.weights:>13,}{c.biases:>9,}{c.params:>13,}{c.macs:>14,}"
        if alive and c.name in alive:
            row += f"{alive[c.name][1]:>10}"
        lines.append(row)
    lines.append("-" * len(head))
    lines.append(f"{'total':<{width}}{sum(c.maps or 0 for c in costs):>7}{sum(c.weights for c in costs):>13,}"
                 f"{sum(c.biases for c in costs):>9,}{sum(c.params for c in costs):>13,}"
                 f"{sum(c.macs for c in costs):>14,}")
    return "\n".join(lines)


def format_group_table(rows: list[tuple[str, int, int, int, int]]) -> str:
    """Groups with their maps, layers and what one map costs: (name, maps, layers, params, MACs)."""
    width = max([8] + [len(r[0]) + 2 for r in rows])
    head = f"{'group':<{width}}{'maps':>7}{'layers':>8}{'params/map':>13}{'MACs/map':>14}"
    lines = [head, "-" * len(head)]
    lines += [f"{n:<{width}}{m:>7}{k:>8}{p:>13,}{c:>14,}" for n, m, k, p, c in rows]
    return "\n".join(lines)
