"""What the classic baselines read from a traced graph beyond a producer's own filters: the one
layer that consumes a group's maps (ThiNet reconstructs its output) and the BatchNorm scales of
a group's maps (network slimming ranks them). Only the public Graph API is used."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import PruningError
from ..graph import Graph

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class Consumer:
    """The layer reading a group's maps; ``positions[j]`` are the input channels (conv) or
    columns (linear, after a flatten) that carry map ``j`` there."""

    name: str
    module: nn.Module
    positions: list[torch.Tensor]


def map_positions(graph: Graph, name: str) -> list[dict[str, dict[str, list[int]]]]:
    """For every map of group ``name`` (current numbering), where it sits in each layer of the group."""
    return [graph.positions(name, [j]) for j in range(graph.group(name).size)]


def consumer_of(graph: Graph, name: str) -> Consumer:
    """The single conv (ungrouped) or linear layer whose input holds group ``name``'s maps.

    ThiNet is defined when the group's maps feed exactly one such layer; residual groups (read
    by several layers), depthwise convs and grouped convs are refused with one line."""
    per_map = map_positions(graph, name)
    producers = {m.name for m in graph.members(name)}
    readers = [layer for layer, at in per_map[0].items() if at["in"]] if per_map else []
    consumers = [layer for layer in readers if not per_map[0][layer]["out"]]
    tied = [layer for layer in readers if layer in producers]
    if tied:
        raise PruningError(f"ThiNet: group {name!r} feeds {tied[0]!r}, whose outputs are the same maps (a depthwise "
                           "conv): there is no next layer to reconstruct; prune it with another criterion")
    if len(consumers) != 1:
        found = ", ".join(consumers) or "none"
        raise PruningError(f"ThiNet: group {name!r} is read by {len(consumers)} layers ({found}); it needs exactly "
                           "one next layer (residual and branching groups have several): leave it out of the scope")
    layer = consumers[0]
    module = graph.model.get_submodule(layer)
    if type(module) not in (nn.Conv2d, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups != 1) \
            or (isinstance(module, nn.Conv2d) and module.padding_mode != "zeros"):
        raise PruningError(f"ThiNet: group {name!r} feeds {layer!r} ({type(module).__name__}); ThiNet reconstructs "
                           "the output of an ungrouped, zero-padded Conv2d or a Linear layer only")
    return Consumer(layer, module, [torch.tensor(at[layer]["in"], dtype=torch.long) for at in per_map])


def norm_scales(graph: Graph, name: str) -> dict[str, torch.Tensor]:
    """|γ| of every BatchNorm scaling group ``name``'s maps: ``{norm layer: one value per map}``
    (a map seen at several channels of one norm adds them up). Empty when no norm has a scale."""
    out: dict[str, torch.Tensor] = {}
    per_map = map_positions(graph, name)
    if not per_map:
        return out
    for layer in per_map[0]:
        module = graph.model.get_submodule(layer)
        if not isinstance(module, NORMS) or module.weight is None:
            continue
        gamma = module.weight.detach().abs().double().cpu()
        out[layer] = torch.stack([gamma[at[layer]["out"]].sum() for at in per_map])
    return out


def group_norm_scale(graph: Graph, name: str) -> torch.Tensor:
    """One |γ| per map of group ``name``: the sum over the BatchNorms scaling it (one norm after
    a plain producer; one per producer when a residual add ties several)."""
    scales = norm_scales(graph, name)
    if not scales:
        raise PruningError(f"slimming: group {name!r} has no BatchNorm with a scale (γ) on its maps; "
                           "leave it out of the scope or use another criterion")
    return torch.stack(list(scales.values())).sum(0)


def batchnorm_weights(model: nn.Module) -> list[nn.Parameter]:
    """The scale parameters (γ) of every BatchNorm of ``model`` (what ``--bn-l1`` pushes to zero)."""
    return [m.weight for m in model.modules() if isinstance(m, NORMS) and m.weight is not None]


def check_thinet_scope(graph: Graph, names: list[str]) -> None:
    """Refuse, before anything is pruned, a scope holding a group ThiNet cannot prune; the one
    line says which groups it can (the scope to give instead)."""
    for name in names:
        try:
            consumer_of(graph, name)
        except PruningError as e:
            usable = []
            for other in graph.names:
                try:
                    consumer_of(graph, other)
                    usable.append(other)
                except PruningError:
                    pass
            hint = f"--scope {','.join(usable)}" if usable else "no group of this model has a single next layer"
            raise PruningError(f"{e} (ThiNet can prune: {hint})") from None
