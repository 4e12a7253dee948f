"""ThiNet (Luo et al. 2017, "ThiNet: A Filter Level Pruning Method for Deep Neural Network
Compression", ICCV) as a ranking: a layer's maps are judged by what the *next* layer needs.

On sampled entries of the next layer's output (random example, output channel and location),
each input map c contributes x̂_c (its slice of the sum the output is), so the output is Σ_c x̂_c
plus the bias. Removing a set T of maps changes every sampled entry by −Σ_{c∈T} x̂_c; ThiNet
chooses T greedily, one map at a time, as the map that keeps Σ_samples (Σ_{c∈T} x̂_c)² smallest;
the rank of a map is its place in that order. (The baseline's least-squares rescale of the kept
maps, after removal, is ``baselines/thinet_rescale.py``.)

Here the maps are a group's maps, their contributions summed over the positions that carry each
one into the next layer (a flatten gives a map H·W columns of a Linear); only the group's own
contributions are reconstructed (other inputs of the next layer do not change).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Split
from ..errors import PruningError
from ..graph import Graph
from ..modes import eval_mode
from .structural import GroupCriterion, map_positions

SAMPLES_PER_IMAGE = 10   # the paper samples 10 entries of the next layer's output per image
CHUNK = 50               # calibration images per forward (bounds the unfolded input's memory)



@dataclass(frozen=True)
class Consumer:
    """The layer reading a group's maps; ``positions[j]`` are the input channels (conv) or
    columns (linear, after a flatten) that carry map ``j`` there."""

    name: str
    module: nn.Module
    positions: list[torch.Tensor]


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


@dataclass(frozen=True)
class ThiNetChoice:
    """The greedy removal order of a group's maps and the reconstruction error after each."""

    order: list[int]          # map indices, first removed first
    errors: list[float]       # Σ (Σ_{c∈T_t} x̂_c)² with T_t the first t+1 maps of ``order``

    def scores(self) -> torch.Tensor:
        """One score per map, lower = removed earlier: the error of the greedy set up to and
        including the map, made strictly increasing along the order (so sorting by score gives
        the greedy order back)."""
        out = torch.empty(len(self.order), dtype=torch.float64)
        last = -math.inf
        for index, error in zip(self.order, self.errors):
            last = max(error, math.nextafter(last, math.inf))
            out[index] = last
        return out


def greedy_removal(x: torch.Tensor, n_remove: int | None = None) -> ThiNetChoice:
    """ThiNet's greedy choice on contributions ``x`` (samples × maps): repeatedly add to the
    removal set the map that keeps ‖Σ_{c∈T} x̂_c‖² smallest (ties: the lowest index).

    Works on the Gram matrix: adding map j to T costs ‖s‖² + 2 Σ_{t∈T} G_jt + G_jj."""
    n = x.shape[1]
    n_remove = n if n_remove is None else n_remove
    gram = x.double().t() @ x.double()
    diag = gram.diagonal().clone()
    cross = torch.zeros(n, dtype=torch.float64)      # Σ_{t∈T} G_jt
    current = 0.0                                    # ‖Σ_{t∈T} x̂_t‖²
    free = torch.ones(n, dtype=torch.bool)
    order, errors = [], []
    for _ in range(n_remove):
        cost = current + 2 * cross + diag
        cost[~free] = float("inf")
        j = int(torch.argmin(cost))                  # argmin returns the first minimum
        current = float(cost[j])
        order.append(j)
        errors.append(current)
        free[j] = False
        cross += gram[:, j]
    return ThiNetChoice(order, errors)


def _sample_conv(x: torch.Tensor, conv: nn.Conv2d, samples: int, generator: torch.Generator) -> torch.Tensor:
    """Per-input-channel contributions (samples·N × C_in) to random output entries of ``conv``."""
    cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)   # N × C·k·k × L
    n, _, positions = cols.shape
    k_out, c_in = conv.out_channels, conv.in_channels
    image = torch.arange(n).repeat_interleave(samples)
    channel = torch.randint(0, k_out, (n * samples,), generator=generator)
    where = torch.randint(0, positions, (n * samples,), generator=generator)
    patches = cols[image.to(x.device), :, where.to(x.device)].view(n * samples, c_in, -1)
    weights = conv.weight.detach()[channel.to(x.device)].view(n * samples, c_in, -1)
    return (patches * weights).sum(2)


def _sample_linear(x: torch.Tensor, linear: nn.Linear, samples: int, generator: torch.Generator) -> torch.Tensor:
    """Per-input-column contributions (samples·N × D_in) to random output units of ``linear``."""
    x = x.flatten(1)
    n = x.shape[0]
    image = torch.arange(n).repeat_interleave(samples)
    unit = torch.randint(0, linear.out_features, (n * samples,), generator=generator)
    return x[image.to(x.device)] * linear.weight.detach()[unit.to(x.device)]


def _by_map(per_position: torch.Tensor, positions: list[torch.Tensor]) -> torch.Tensor:
    """Sum the contributions of each map's positions: samples × maps."""
    return torch.stack([per_position[:, p.to(per_position.device)].sum(1) for p in positions], 1)


@torch.no_grad()
def contributions(graph: Graph, name: str, calibration: Split, samples_per_image: int = SAMPLES_PER_IMAGE,
                  seed: int = 0, consumer: Consumer | None = None) -> torch.Tensor:
    """x̂: the contribution of each map of group ``name`` to sampled entries of the next layer's
    output, on the calibration images (eval mode): samples × maps, float64 on the CPU."""
    consumer = consumer or consumer_of(graph, name)
    generator = torch.Generator().manual_seed(seed)
    inputs: list[torch.Tensor] = []
    hook = consumer.module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    model = graph.model
    parts = []
    try:
        with eval_mode(model):
            for start in range(0, len(calibration), CHUNK):
                inputs.clear()
                model(calibration.images[start:start + CHUNK])
                if len(inputs) != 1:
                    raise PruningError(f"ThiNet: {consumer.name!r} runs {len(inputs)} times per forward; it needs "
                                       "a next layer called once")
                sample = _sample_conv if isinstance(consumer.module, nn.Conv2d) else _sample_linear
                per_position = sample(inputs[0], consumer.module, samples_per_image, generator)
                parts.append(_by_map(per_position, consumer.positions).double().cpu())
    finally:
        hook.remove()
    return torch.cat(parts)


def thinet_choice(graph: Graph, name: str, calibration: Split, samples_per_image: int = SAMPLES_PER_IMAGE,
                  seed: int = 0) -> ThiNetChoice:
    """The full greedy removal order of group ``name``'s maps (every map ranked)."""
    return greedy_removal(contributions(graph, name, calibration, samples_per_image, seed))


class ThiNetCriterion(GroupCriterion):
    """Next layer's reconstruction error on sampled outputs, maps chosen greedily (rank = greedy order)."""

    name = "thinet"
    display_name = "ThiNet"
    paper = "Luo et al. 2017, ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression (ICCV)"

    def score_group(self, graph: Graph, name: str, calibration: Split, seed: int = 0) -> torch.Tensor:
        return thinet_choice(graph, name, calibration, seed=seed).scores()
