"""Every registered layer type's adapter (``fmprune.layers.registered_layer_types()``) on one small
example each, in float64: a cut gives the uncut layer's output at the kept outputs when the cut
inputs are zero; its cost is the parameters the cut layer really has and the MACs counted by hand;
its labels flow as ``channelwise`` says. The tests are parametrised over the registry at collection
time, so a type registered without an example here fails ``test_every_registered_type_has_an_example``
instead of going untested."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

import fmprune
from fmprune.errors import FmpruneError
from fmprune.layers import LayerAdapter, adapter_for, registered_layer_types

TYPES = registered_layer_types()   # at collection time: built-ins (no test registers at import)

Shape = tuple[int, ...]


def conv_macs(module: nn.Module, x: Shape, out: Shape) -> int:
    """A conv: each output value reads in_channels / groups inputs over the kernel."""
    return module.out_channels * (module.in_channels // module.groups) * math.prod(module.kernel_size) * math.prod(out[2:])


def conv_transpose_macs(module: nn.Module, x: Shape, out: Shape) -> int:
    """A transposed conv: each input value scatters to every output channel over the kernel."""
    return module.in_channels * module.out_channels * math.prod(module.kernel_size) * math.prod(x[2:])


def linear_macs(module: nn.Linear, x: Shape, out: Shape) -> int:
    """A Linear over the last axis: in_features · out_features per row (every other axis a row)."""
    return module.in_features * module.out_features * math.prod(x[1:-1])


def attention_macs(module: nn.MultiheadAttention, x: Shape, out: Shape) -> int:
    """Self-attention over L tokens, heads · head_dim = d inner: q, k, v projections 3·L·d·E_in,
    scores QK^T L·L·d, weighted values L·L·d, out_proj L·d·E_out."""
    tokens, e_in = x[1], x[2]
    inner = module.num_heads * module.head_dim
    return 3 * tokens * inner * e_in + 2 * tokens * tokens * inner + tokens * inner * out[2]


def no_macs(module: nn.Module, x: Shape, out: Shape) -> int:
    """Per-channel layers: fmprune counts their arithmetic as nothing (it folds into the conv)."""
    return 0


def attention_call(module: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    return module(x, x, x, need_weights=False)[0]


@dataclass(frozen=True)
class Example:
    build: Callable[[], nn.Module]
    input_shape: Shape                                   # one call's input, batch first
    macs: Callable[[nn.Module, Shape, Shape], int]       # hand count per example, of the cut layer
    call: Callable[[nn.Module, torch.Tensor], torch.Tensor] = lambda m, x: m(x)
    pinned: bool = False          # its adapter keeps (pins) its maps by default
    renormalises: bool = False    # statistics over all channels: a cut is a narrower layer, not zeroing

    def cost_shape(self, out: torch.Tensor) -> Shape:
        """The shape the graph hands ``cost``: the output's (batch first), or attention's
        (query tokens, key tokens)."""
        return (out.shape[1], out.shape[1]) if self.call is attention_call else tuple(out.shape)


def norm(cls: type) -> Callable[[], nn.Module]:
    return lambda: cls(6, affine=True, track_running_stats=True)


EXAMPLES: dict[type, Example] = {
    nn.Conv1d: Example(lambda: nn.Conv1d(6, 12, 3, padding=1, groups=6), (2, 6, 9), conv_macs),   # depthwise, x2
    nn.Conv2d: Example(lambda: nn.Conv2d(5, 7, 3, stride=2, padding=1), (2, 5, 9, 9), conv_macs),
    nn.Conv3d: Example(lambda: nn.Conv3d(4, 6, (2, 3, 3), bias=False), (2, 4, 3, 5, 5), conv_macs),
    # kernel 2, stride 2: every output position is hit by exactly one input (what cost assumes)
    nn.ConvTranspose1d: Example(lambda: nn.ConvTranspose1d(5, 6, 2, stride=2), (2, 5, 4), conv_transpose_macs),
    nn.ConvTranspose2d: Example(lambda: nn.ConvTranspose2d(5, 7, 2, stride=2), (2, 5, 3, 4), conv_transpose_macs),
    nn.ConvTranspose3d: Example(lambda: nn.ConvTranspose3d(3, 4, 2, stride=2), (2, 3, 2, 3, 2), conv_transpose_macs),
    nn.Linear: Example(lambda: nn.Linear(6, 5), (2, 3, 6), linear_macs),   # over tokens: 3 rows per example
    nn.BatchNorm1d: Example(norm(nn.BatchNorm1d), (4, 6, 5), no_macs),
    nn.BatchNorm2d: Example(norm(nn.BatchNorm2d), (4, 6, 3, 3), no_macs),
    nn.BatchNorm3d: Example(norm(nn.BatchNorm3d), (4, 6, 2, 3, 3), no_macs),
    nn.InstanceNorm1d: Example(norm(nn.InstanceNorm1d), (2, 6, 5), no_macs),
    nn.InstanceNorm2d: Example(norm(nn.InstanceNorm2d), (2, 6, 3, 3), no_macs),
    nn.InstanceNorm3d: Example(norm(nn.InstanceNorm3d), (2, 6, 2, 3, 3), no_macs),
    nn.PReLU: Example(lambda: nn.PReLU(6), (2, 6, 3, 3), no_macs),
    # one channel per group: per-channel, it prunes (groups of several channels pin their maps)
    nn.GroupNorm: Example(lambda: nn.GroupNorm(6, 6), (2, 6, 3, 3), no_macs),
    nn.LayerNorm: Example(lambda: nn.LayerNorm(6), (2, 3, 6), no_macs, renormalises=True),
    # the default adapter pins the embedding (kept by the graph), but prune must still be exact
    nn.MultiheadAttention: Example(lambda: nn.MultiheadAttention(8, 2, batch_first=True), (2, 5, 8),
                                   attention_macs, call=attention_call, pinned=True),
}


class Labels:
    """The tracer's side of ``output_labels``: fresh labels counted up from 1000, pins recorded."""

    def __init__(self) -> None:
        self.next, self.pinned = 1000, []

    def fresh(self, n: int) -> np.ndarray:
        self.next += n
        return np.arange(self.next - n, self.next)

    def pin(self, labels: np.ndarray, reason: str) -> None:
        self.pinned.append((labels, reason))


@torch.no_grad()
def randomized(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and running statistic random (BatchNorm's ones and zeros would hide a
    wrong cut), in float64, eval mode."""
    g = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t.is_floating_point():
            t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) + 0.5 if name.endswith("running_var")
                    else torch.randn(t.shape, generator=g, dtype=t.dtype))
    return module


def some(n: int, seed: int) -> torch.Tensor:
    """A sorted random two thirds of ``n`` positions (at least one cut)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: n - max(1, n // 3)].sort().values


@dataclass
class Cut:
    module: nn.Module          # the uncut layer
    adapter: LayerAdapter
    x: torch.Tensor
    in_axis: int
    out_axis: int
    in_labels: np.ndarray
    out_labels: np.ndarray
    labels: Labels
    keep_in: torch.Tensor
    keep_out: torch.Tensor
    cut: nn.Module             # the layer after adapter.prune

    @property
    def kept_x(self) -> torch.Tensor:
        """The input the cut layer reads: the example's input at the kept positions."""
        return self.x.index_select(self.in_axis, self.keep_in)


def cut_of(layer_type: type) -> Cut:
    """The example of ``layer_type`` cut as the graph cuts it: outputs tied to inputs (the labels
    say so) follow the kept inputs, fresh outputs are cut on their own."""
    example = EXAMPLES[layer_type]
    torch.manual_seed(0)
    module = randomized(example.build())
    adapter = adapter_for(module)
    x = torch.randn(example.input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = example.call(module, x)
    in_axis, out_axis = adapter.channel_axis(module, x.dim()), adapter.channel_axis(module, out.dim())
    labels = Labels()
    in_labels = np.arange(x.shape[in_axis])
    out_labels = adapter.output_labels(module, in_labels, labels, "layer")
    keep_in = some(x.shape[in_axis], 2)
    if np.isin(out_labels, in_labels).all():   # channelwise, depthwise: the kept inputs' outputs
        keep_out = torch.from_numpy(np.flatnonzero(np.isin(out_labels, in_labels[keep_in.numpy()])))
    else:
        keep_out = some(out.shape[out_axis], 3)
    cut = copy.deepcopy(module)
    adapter.prune(cut, keep_in, keep_out, None)
    return Cut(module, adapter, x, in_axis, out_axis, in_labels, out_labels, labels, keep_in, keep_out, cut)


TESTED = [t for t in TYPES if t in EXAMPLES]


@pytest.mark.parametrize("layer_type", TYPES, ids=lambda t: t.__name__)
def test_every_registered_type_has_an_example(layer_type):
    assert layer_type in EXAMPLES, f"{layer_type.__name__} has an adapter but no example in tests/test_layers.py"
    assert type(EXAMPLES[layer_type].build()) is layer_type


def test_every_example_is_a_registered_type():
    assert set(EXAMPLES) <= set(TYPES)


@pytest.mark.parametrize("layer_type", TESTED, ids=lambda t: t.__name__)
def test_a_cut_gives_the_kept_outputs_of_the_layer_with_the_cut_inputs_zero(layer_type):
    example, c = EXAMPLES[layer_type], cut_of(layer_type)
    kept_x = c.kept_x
    with torch.no_grad():
        got = example.call(c.cut, kept_x)
        if example.renormalises:
            # LayerNorm's statistics run over all channels: removing a map is not zeroing it, the
            # cut layer is a LayerNorm of the smaller width over the kept inputs
            narrow = nn.LayerNorm(len(c.keep_in)).double()
            narrow.weight.copy_(c.module.weight[c.keep_in])
            narrow.bias.copy_(c.module.bias[c.keep_in])
            want = narrow(kept_x)
        else:
            zeroed = c.x.clone()
            cut_inputs = torch.ones(c.x.shape[c.in_axis], dtype=torch.bool)
            cut_inputs[c.keep_in] = False
            zeroed.index_fill_(c.in_axis, cut_inputs.nonzero().flatten(), 0.0)
            want = example.call(c.module, zeroed).index_select(c.out_axis, c.keep_out)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer_type", TESTED, ids=lambda t: t.__name__)
def test_the_cost_of_a_cut_is_its_real_parameters_and_the_macs_counted_by_hand(layer_type):
    example, c = EXAMPLES[layer_type], cut_of(layer_type)
    kept_x = c.kept_x
    with torch.no_grad():
        out = example.call(c.cut, kept_x)
    n_in, n_out = len(c.keep_in), len(c.keep_out)
    params = sum(p.numel() for p in c.cut.parameters())
    macs = example.macs(c.cut, tuple(kept_x.shape), tuple(out.shape))
    # what the uncut layer predicts for the cut (what the graph asks before removing) and what
    # the cut layer says of itself
    assert c.adapter.cost(c.module, example.cost_shape(out), n_in, n_out) == (params, macs)
    assert c.adapter.cost(c.cut, example.cost_shape(out), n_in, n_out) == (params, macs)


@pytest.mark.parametrize("layer_type", TESTED, ids=lambda t: t.__name__)
def test_labels_are_the_inputs_for_channelwise_layers_and_new_or_tied_otherwise(layer_type):
    example, c = EXAMPLES[layer_type], cut_of(layer_type)
    with torch.no_grad():
        out = example.call(c.module, c.x)
    assert len(c.out_labels) == out.shape[c.out_axis]
    if c.adapter.channelwise:
        assert np.array_equal(c.out_labels, c.in_labels)
    elif isinstance(c.module, nn.Conv1d) and c.module.groups > 1:
        # depthwise with multiplier 2: output j belongs to input j // 2
        assert np.array_equal(c.out_labels, np.repeat(c.in_labels, 2))
    else:
        assert not np.isin(c.out_labels, c.in_labels).any()      # maps the layer creates
        assert len(set(c.out_labels.tolist())) == len(c.out_labels)
    assert bool(c.labels.pinned) == example.pinned
    if example.pinned:
        pinned = np.concatenate([labels for labels, _ in c.labels.pinned])
        assert set(pinned.tolist()) == set(c.in_labels.tolist()) | set(c.out_labels.tolist())


def test_groupnorm_over_several_channels_pins_its_maps():
    """The other GroupNorm layout (its example has one channel per group): statistics mix the
    channels of a group, so its maps are kept."""
    labels = Labels()
    module = nn.GroupNorm(2, 6)
    inputs = np.arange(6)
    assert np.array_equal(adapter_for(module).output_labels(module, inputs, labels, "gn"), inputs)
    assert len(labels.pinned) == 1 and np.array_equal(labels.pinned[0][0], inputs)



def test_a_registered_type_is_listed_until_unregistered():
    class Mine(nn.Module):
        def forward(self, x):
            return x

    fmprune.register_layer(Mine, LayerAdapter())
    assert Mine in registered_layer_types() and adapter_for(Mine()) is not None
    fmprune.unregister_layer(Mine)
    assert Mine not in registered_layer_types() and adapter_for(Mine()) is None
    with pytest.raises(FmpruneError, match="^Mine is not a registered layer type$"):
        fmprune.unregister_layer(Mine)
