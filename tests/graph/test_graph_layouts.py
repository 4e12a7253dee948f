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

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fmprune
from fmprune.layers import LayerNormAdapter
from fmprune.models.torchvision_models import torchvision_installed
from support.graph_models import zero_maps
from support.layout_models import CASES, ChannelsLast, LayerNorm2d
from support.reference import prune_against_reference, randomize_constants


@pytest.fixture(autouse=True)
def _layer_norm_2d():
    fmprune.register_layer(LayerNorm2d, LayerNormAdapter(axis=1))
    yield
    fmprune.unregister_layer(LayerNorm2d)


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
