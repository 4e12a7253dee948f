"""Channels that move: permute/transpose to channels-last and back (ConvNeXt's blocks), a view
splitting the channel axis and a transpose shuffling it (ShuffleNet's channel shuffle), a
per-channel scale of the model (ConvNeXt's layer_scale), LayerNorm over the channels, and
eval-identity ops (stochastic depth). Random removals in every group must give exactly
(float64) the reference model: removed maps zeroed, and every LayerNorm over channels
normalising over the kept channels only (what a LayerNorm of the smaller width computes:
removing a map is not zeroing it there). An op the label flow cannot follow is refused, and the
advice of the refusal, followed, gives a model that prunes exactly."""

from __future__ import annotations

import copy
import random
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fmprune
from fmprune.models.torchvision_models import torchvision_installed
from graph_models import randomize_norms, zero_maps


def _layer_norm_axis(module: nn.Module) -> int:
    """The axis a LayerNorm normalises: torchvision's LayerNorm2d (and this file's) axis 1."""
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
    of a module, such as a layer scale, multiplies zeros and needs nothing) and leave them out of
    the statistics of its LayerNorms."""
    modules = dict(reference.named_modules())
    zero_maps(reference, {name: at for name, at in positions.items() if name in modules})
    for name, at in positions.items():
        if hasattr(modules.get(name), "removed"):
            modules[name].removed.update(at["out"])


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


class LayerNorm2d(nn.LayerNorm):
    """torchvision's LayerNorm2d, as ConvNeXt's downsampling and head use it (normalises axis 1);
    fmprune knows torchvision's class by name, this one is registered in the test below."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelsLast(nn.Module):
    """ConvNeXt's block: depthwise conv, permute to NHWC, LayerNorm, Linear up, GELU, Linear down,
    permute back, a per-channel layer scale, a residual add; a LayerNorm2d and a head."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.stem, self.norm0 = nn.Conv2d(3, dim, 2, stride=2), LayerNorm2d(dim)
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up, self.down = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-6))
        self.head_norm, self.fc = LayerNorm2d(dim), nn.Linear(dim, 3)

    def forward(self, x):
        x = self.norm0(self.stem(x))
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.down(F.gelu(self.up(self.norm(y)))).permute(0, 3, 1, 2)
        x = x + self.layer_scale * y
        return self.fc(torch.flatten(self.head_norm(F.adaptive_avg_pool2d(x, 1)), 1))


class TransposedTokens(nn.Module):
    """Channels moved with transpose(1, 3) and reshaped to tokens (N, H·W, C), a Linear over them,
    back to (N, C, H, W) with a transpose and a reshape; and a scale of shape (C,) added
    channels-last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.mix = nn.Linear(8, 5)
        self.offset = nn.Parameter(torch.zeros(5))
        self.out, self.fc = nn.Conv2d(5, 4, 1), nn.Linear(4, 2)

    def forward(self, x):
        n, _, h, w = x.shape
        t = F.relu(self.bn(self.conv(x))).flatten(2).transpose(1, 2)    # (N, HW, C)
        t = torch.relu(self.mix(t)) * self.offset
        y = t.transpose(1, 2).reshape(n, -1, h, w)
        return self.fc(F.relu(self.out(y)).mean((2, 3)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's: view (B, g, C/g, H, W), swap the two, view back."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, c, h, w)


class Shuffle(nn.Module):
    """Two convs concatenated, shuffled in 2 groups, a conv and a flatten into Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c, self.fc = nn.Conv2d(8, 5, 1), nn.Linear(5 * 16, 3)

    def forward(self, x):
        x = channel_shuffle(torch.cat([self.a(x), F.relu(self.b(x))], 1), 2)
        x = F.relu(self.dw(F.relu(self.bn(x))))
        return self.fc(F.relu(self.c(x)).flatten(1))


class ShuffleFixed(Shuffle):
    """The same shuffle with the group size written as a constant: its maps are kept."""

    def forward(self, x):
        x = torch.cat([self.a(x), F.relu(self.b(x))], 1)
        x = x.view(x.shape[0], 2, 4, 4, 4).transpose(1, 2).reshape(x.shape[0], 8, 4, 4)
        x = F.relu(self.dw(F.relu(self.bn(x))))
        return self.fc(F.relu(self.c(x)).flatten(1))


CASES = {   # model, group sizes
    "channels_last": (ChannelsLast, {"stem": 6, "up": 24}),
    "transposed_tokens": (TransposedTokens, {"conv": 8, "mix": 5, "out": 4}),
    # a's map i and b's map i meet in one column of the (2, 4) view: one map of two channels
    "shuffle": (Shuffle, {"a": 4, "c": 5}),
    "shuffle_fixed_size": (ShuffleFixed, {"c": 5}),
}


@pytest.fixture(autouse=True)
def _layer_norm_2d():
    from fmprune.layers import LayerNormAdapter, _REGISTRY
    fmprune.register_layer(LayerNorm2d, LayerNormAdapter(axis=1))
    yield
    _REGISTRY.pop(LayerNorm2d, None)


@pytest.mark.parametrize("case", list(CASES))
def test_moved_channels_prune_exactly(case):
    cls, sizes = CASES[case]
    torch.manual_seed(0)
    model, x = cls(), torch.randn(3, 3, 4, 4)
    assert fmprune.trace(model, x[:1]).sizes() == sizes
    assert prune_against_reference(model, x, rounds=3) < 1e-12


def test_layer_norm_normalises_over_the_kept_channels():
    """Removing a map of a channels-last LayerNorm leaves it out of the statistics: the reference
    normalising over kept channels agrees, the zeroed model (statistics over all) does not."""
    torch.manual_seed(0)
    model = randomize_constants(ChannelsLast()).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    zeroed = copy.deepcopy(model)
    graph = fmprune.trace(model, x[:1])
    zero_maps(zeroed, graph.positions("stem", [1, 4]))
    graph.remove("stem", [1, 4])
    assert model.norm.normalized_shape == (4,) and model.layer_scale.shape == (4, 1, 1)
    with torch.no_grad():
        assert (model(x) - zeroed(x)).abs().max() > 1e-3


def test_a_layer_scale_is_cut_in_the_graph_module_too():
    """Evaluation replays the traced graph module: it must read the cut layer scale."""
    torch.manual_seed(0)
    model, x = ChannelsLast(), torch.randn(2, 3, 4, 4)
    graph = fmprune.trace(model, x[:1])
    graph.remove("stem", [0, 2])
    with torch.no_grad():
        assert torch.equal(graph.graph_module(x), model(x))
    assert graph.total_macs() == fmprune.costs.count_macs(model, x[:1])
    assert {m.name: m.axis for m in graph.members("up")} == {"up": 3}


class MovedThenReduced(nn.Module):
    """A mean over channels moved last (what the label flow does not follow): refused."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.q, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 5, 1), nn.Linear(4 * 4 + 5, 2)

    def forward(self, x):
        a = F.relu(self.p(x)).permute(0, 2, 3, 1).mean(-1)
        return self.fc(torch.cat([a.flatten(1), F.relu(self.q(x)).mean((2, 3))], 1))


class MovedThenPooled(nn.Module):
    """A pooling of a channels-last tensor (it would pool over channels): refused."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.q, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 5, 1), nn.Linear(4 * 2 * 3 + 5, 2)

    def forward(self, x):
        a = F.max_pool2d(F.relu(self.p(x)).permute(0, 2, 3, 1), 2)
        return self.fc(torch.cat([a.flatten(1), F.relu(self.q(x)).mean((2, 3))], 1))


@pytest.mark.parametrize("cls,node", [(MovedThenReduced, "mean"), (MovedThenPooled, "max_pool2d")])
def test_a_refusal_names_the_op_and_its_advice_works(cls, node):
    torch.manual_seed(0)
    model, x = cls(), torch.randn(3, 3, 4, 4)
    with pytest.raises(fmprune.UnsupportedModelError, match=f"at node '{node}'.*ignore=\\['{node}'\\]"):
        fmprune.trace(model, x[:1])
    graph = fmprune.trace(model, x[:1], ignore=[node])
    assert graph.sizes() == {"q": 5}
    assert prune_against_reference(model, x, rounds=3, ignore=[node]) < 1e-12


@pytest.mark.skipif(not torchvision_installed(), reason="torchvision not installed")
def test_stochastic_depth_is_followed():
    """torchvision's StochasticDepth calls its fx-wrapped ``stochastic_depth`` (a leaf of the
    graph), which scales whole examples (the identity in eval): channels pass through."""
    from fmprune.models.torchvision_models import import_torchvision
    stochastic_depth = import_torchvision().ops.StochasticDepth

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.p, self.q, self.fc = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 3, padding=1), nn.Linear(6, 2)
            self.drop = stochastic_depth(0.2, "row")

        def forward(self, x):
            x = self.p(x)
            x = x + self.drop(F.relu(self.q(x)))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    model, x = Residual(), torch.randn(3, 3, 4, 4)
    assert fmprune.trace(model, x[:1]).sizes() == {"p": 6}
    assert prune_against_reference(model, x, rounds=3) < 1e-12
