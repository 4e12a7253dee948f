"""Exactness: a pruned model against a never-pruned reference, in float64. The reference has the
removed maps zeroed (``zero_maps``), its LayerNorms over one axis normalising over the kept
channels only (what a LayerNorm of the smaller width computes: removing a map is not zeroing it
there), and a removed head's v rows and out_proj columns zeroed (zeroing its q, k rows alone would
not do: its softmax turns uniform and still mixes v; with v and its out_proj columns zero its
contribution is exactly 0, which is what removal gives)."""

from __future__ import annotations

import copy
import random
import types

import torch
from torch import nn

import fmprune
from support.graph_models import randomize_norms, zero_maps


def assert_shrunk_equals_zeroed(model: nn.Module, x: torch.Tensor, rounds: int = 2, seed: int = 0) -> fmprune.Graph:
    """Remove random maps of every group for a few rounds; after each round the shrunk model must
    equal, in float64, a never-pruned copy whose removed maps are zeroed (``zero_maps``)."""
    model, x = randomize_norms(model, seed).double(), x.double()
    reference = copy.deepcopy(model)
    ref_graph = fmprune.trace(reference, x[:1])    # never pruned: its numbering is the original one
    graph = fmprune.trace(model, x[:1])
    rng = random.Random(seed)
    for round_ in range(rounds):
        for g in graph.groups:
            if g.size <= 1:
                continue
            drop = sorted(rng.sample(range(g.size), rng.randint(1, g.size - 1)))
            originals = [g.original[i] for i in drop]
            zero_maps(reference, ref_graph.positions(g.name, [ref_graph.alive(g.name).index(o) for o in originals]))
            graph.remove(g.name, drop)
        with torch.no_grad():
            out, ref = model(x), reference(x)
        diff = ((out - ref).abs().max() / ref.abs().max().clamp_min(1.0)).item()
        assert diff < 1e-9, f"round {round_}: shrunk and zeroed differ by {diff:.3g} (relative)"
    return graph


@torch.no_grad()
def zero_heads(reference: nn.Module, positions: dict[str, dict[str, list[int]]]) -> None:
    """In the reference: a removed head (``NAME:heads`` of ``Graph.positions``) gets its v rows
    and out_proj columns zeroed; a removed output map of an attention, its out_proj row."""
    modules = dict(reference.named_modules())
    for name, at in positions.items():
        layer, _, role = name.partition(":")
        module = modules.get(layer)
        if not isinstance(module, nn.MultiheadAttention) or not at["out"]:
            continue
        if role == "heads":
            size, width = module.head_dim, module.num_heads * module.head_dim
            for h in at["out"]:
                v_rows = slice(2 * width + h * size, 2 * width + (h + 1) * size)
                module.in_proj_weight[v_rows] = 0
                module.in_proj_bias[v_rows] = 0
                module.out_proj.weight[:, h * size:(h + 1) * size] = 0
        else:
            zero_maps(module, {"out_proj": {"in": [], "out": at["out"]}})


def _layer_norm_axis(module: nn.Module) -> int:
    """The axis a LayerNorm normalises: torchvision's LayerNorm2d (and ``support.layout_models``') axis 1."""
    return 1 if type(module).__name__ == "LayerNorm2d" else -1


def _norm_over_kept(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """The reference LayerNorm: statistics over the positions not removed (``module.removed``);
    removed positions have zero weight and bias (``zero_maps``), so they come out zero."""
    axis = _layer_norm_axis(module) % x.dim()
    keep = torch.ones(x.shape[axis], dtype=torch.bool)
    keep[sorted(module.removed)] = False
    kept = x.index_select(axis, keep.nonzero().flatten())
    mean = kept.mean(axis, keepdim=True)
    var = kept.var(axis, unbiased=False, keepdim=True)
    shape = [1] * x.dim()
    shape[axis] = -1
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight.view(shape) + module.bias.view(shape)


def kept_channel_reference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose LayerNorms over one axis normalise over the kept channels."""
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
            m.removed = set()
            m.forward = types.MethodType(_norm_over_kept, m)
    return reference


def remove_in_reference(reference: nn.Module, positions: dict[str, dict[str, list[int]]]) -> None:
    """Zero the removed maps in every layer of the reference (``zero_maps``; a per-channel tensor
    of a module, such as a layer scale, multiplies zeros and needs nothing), leave them out of
    the statistics of its LayerNorms, and remove the attentions' heads and outputs (``zero_heads``)."""
    modules = dict(reference.named_modules())
    zero_maps(reference, {name: at for name, at in positions.items() if name in modules})
    for name, at in positions.items():
        if hasattr(modules.get(name), "removed"):
            modules[name].removed.update(at["out"])
    zero_heads(reference, positions)


@torch.no_grad()
def randomize_constants(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics (``randomize_norms``), and every tensor initialised to one value (a
    layer scale of 1e-6, LayerNorm's ones and zeros, zero biases) made random, so that zeroing
    and normalising over the kept channels are real tests."""
    randomize_norms(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for p in model.parameters():
        if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model.eval()


def prune_against_reference(model: nn.Module, x: torch.Tensor, rounds: int = 2, fraction: float | None = None,
                            seed: int = 0, **trace_kwargs) -> float:
    """Remove random maps of every group (``fraction`` of each, or a random number) for a few
    rounds, in float64; returns the largest relative difference to the reference seen after a
    round (removed maps zeroed, LayerNorms over the kept channels)."""
    model = randomize_constants(model, seed)
    reference = kept_channel_reference(model)
    ref_graph = fmprune.trace(reference, x[:1], **trace_kwargs)   # never pruned: the original numbering
    graph = fmprune.trace(model, x[:1], **trace_kwargs)
    model, reference, x = model.double(), reference.double(), x.double()   # traced in float32: faster
    rng = random.Random(seed)
    worst = 0.0
    for _ in range(rounds):
        for g in graph.groups:
            if g.size <= 1:
                continue
            k = max(1, round(fraction * g.size)) if fraction else rng.randint(1, g.size - 1)
            drop = sorted(rng.sample(range(g.size), min(k, g.size - 1)))
            alive = ref_graph.alive(g.name)
            remove_in_reference(reference, ref_graph.positions(g.name, [alive.index(g.original[i]) for i in drop]))
            graph.remove(g.name, drop)
        with torch.no_grad():
            out, ref = model(x), reference(x)
        worst = max(worst, ((out - ref).abs().max() / ref.abs().max().clamp_min(1.0)).item())
    return worst
