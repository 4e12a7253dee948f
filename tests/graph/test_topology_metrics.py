import pytest
import torch
from torch import nn

from fmprune.errors import PruningError, TopologyError
import fmprune
from fmprune.models import available_models, create_model
from fmprune.graph.chain import trace


def test_lenet_matches_thesis_table_3_1():
    model = create_model("lenet")
    graph = fmprune.trace(model, torch.zeros(1, 1, 28, 28))
    costs = {c.name: c for c in graph.layer_costs()}
    assert [costs[n].weights for n in ("conv1", "conv2", "fc1", "fc2")] == [800, 51_200, 3_211_264, 10_240]
    assert [costs[n].macs for n in ("conv1", "conv2", "fc1", "fc2")] == [627_200, 10_035_200, 3_211_264, 10_240]
    assert graph.total_params() == 3_274_634 == sum(p.numel() for p in model.parameters())
    assert graph.total_macs() == 13_883_904
    assert fmprune.costs.count_macs(model, torch.zeros(2, 1, 28, 28)) == 13_883_904


def test_lenet_topology_prunable_maps_and_consumers():
    topo = trace(create_model("lenet"), (1, 28, 28))
    assert topo.prunable_names == ["conv1", "conv2", "fc1"]
    assert sum(topo.stage(n).n_maps for n in topo.prunable_names) == 1120
    assert topo.prunable("conv2").consumer == "fc1" and topo.prunable("conv2").flatten_factor == 49
    assert topo.prunable("conv1").flatten_factor == 1
    assert topo.stage("conv1").map_numel == 784 and topo.stage("fc1").map_numel == 1
    # a conv1 map costs its filter (784 positions x 25 taps) and its slice of conv2 (196 x 64 x 25)
    assert topo.macs_per_map()["conv1"] == 784 * 25 + 196 * 64 * 25
    assert topo.macs_per_map()["fc1"] == 3136 + 10
    graph = fmprune.trace(topo.model, torch.zeros(1, 1, 28, 28))
    assert graph.macs_per_map() == topo.macs_per_map()


def test_chain_forward_equals_module():
    model = create_model("lenet").eval()
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(trace(model, (1, 28, 28)).forward(x), model(x), atol=1e-6)


def test_classifier_and_unknown_layers_are_refused():
    topo = trace(create_model("lenet"), (1, 28, 28))
    with pytest.raises(PruningError, match="classifier"):
        topo.scope("fc2")
    with pytest.raises(PruningError, match="unknown layer 'conv9'"):
        topo.scope("conv9")
    assert topo.scope("all") == ["conv1", "conv2", "fc1"]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(torch.flatten(y + x, 1))


class Sigmoidal(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.Sigmoid()
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.act(self.conv(x)), 1))


def test_unsupported_ops_are_named():
    with pytest.raises(TopologyError, match="branching|add"):
        trace(Residual(), (1, 28, 28))
    with pytest.raises(TopologyError, match="'act' \\(Sigmoid\\)"):
        trace(Sigmoidal(), (1, 28, 28))


def test_registry():
    assert "lenet" in available_models()
    from fmprune.errors import FmpruneError
    with pytest.raises(FmpruneError, match="unknown model 'vgg99'"):
        create_model("vgg99")
