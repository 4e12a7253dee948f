"""Dependency groups on hand-built models: exact groups and sizes, zeroed == shrunk after several
rounds of removal, exact costs, optimizer slicing, and clear refusals."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fmprune
from fmprune.errors import PruningError
from fmprune.layers import ChannelwiseAdapter
from support.graph_models import CASES, randomize_norms, zero_maps

def _model(case: str) -> tuple[nn.Module, torch.Tensor]:
    cls, shape, _ = CASES[case]
    torch.manual_seed(0)
    return randomize_norms(cls()), torch.randn(4, *shape)


@pytest.mark.parametrize("case", list(CASES))
def test_exact_groups_and_sizes(case):
    model, x = _model(case)
    graph = fmprune.trace(model, x[:1])
    assert {g.name: g.size for g in graph.groups} == CASES[case][2]
    assert [g.name for g in graph.groups] == list(CASES[case][2])   # stable, graph order


@pytest.mark.parametrize("case", list(CASES))
def test_zeroed_equals_shrunk_over_rounds(case):
    model, x = _model(case)
    reference = copy.deepcopy(model)
    ref_graph = fmprune.trace(reference, x[:1])    # never pruned: its numbering is the original one
    graph = fmprune.trace(model, x[:1])
    for round_ in range(3):
        for g in graph.groups:
            if g.size <= 1:
                continue
            drop = sorted({0, g.size // 2}) if g.size > 2 else [round_ % 2]
            originals = [g.original[i] for i in drop]
            zero_maps(reference, ref_graph.positions(g.name, [ref_graph.alive(g.name).index(o) for o in originals]))
            graph.remove(g.name, drop)
        with torch.no_grad():
            diff = (model(x) - reference(x)).abs().max().item()
        assert diff < 1e-5, f"{case}, round {round_}: shrunk and zeroed differ by {diff:.3g}"
    assert all(g.size >= 1 for g in graph.groups)
    # the shrunk model is a plain module: it saves and reloads without fmprune
    restored = copy.deepcopy(model)
    restored.load_state_dict(model.state_dict())


def test_lenet_costs_match_the_thesis():
    from fmprune.models import LeNet
    graph = fmprune.trace(LeNet().eval(), torch.zeros(1, 1, 28, 28))
    assert graph.total_params() == 3_274_634 and graph.total_macs() == 13_883_904
    # one conv1 map: its 5x5 filter at 28x28 plus its 64 5x5 slices of conv2 at 14x14
    assert graph.macs_per_map() == {"conv1": 25 * 784 + 64 * 25 * 196, "conv2": 32 * 25 * 196 + 49 * 1024,
                                    "fc1": 3136 + 10}
    assert graph.params_per_map() == {"conv1": 26 + 64 * 25, "conv2": 32 * 25 + 1 + 49 * 1024,
                                      "fc1": 3137 + 10}
    before = graph.total_macs()
    graph.remove("conv2", [3])
    assert before - graph.total_macs() == 32 * 25 * 196 + 49 * 1024


@pytest.mark.parametrize("case", list(CASES))
def test_map_cost_is_what_removal_saves(case):
    model, x = _model(case)
    graph = fmprune.trace(model, x[:1])
    for g in graph.groups:
        params, macs = graph.map_cost(g.name)
        p0, m0 = graph.total_params(), graph.total_macs()
        graph.remove(g.name, [0])
        assert (p0 - graph.total_params(), m0 - graph.total_macs()) == (params, macs), g.name


def test_adam_state_is_sliced_with_the_weights_on_a_residual_model():
    model, x = _model("residual")
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    before = {n: (p.detach().clone(), opt.state[p]["exp_avg"].clone()) for n, p in model.named_parameters()}
    graph = fmprune.trace(model, x[:1])
    graph.remove("stem", [1, 4], optimizer=opt)    # the residual stream: stem, a2, c2, their BNs, a1/c1/down/e1 inputs
    keep = torch.tensor([0, 2, 3, 5, 6, 7])
    params = dict(model.named_parameters())
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in params.values()}
    for name, p in params.items():
        old_w, old_m = before[name]
        m = opt.state[p]["exp_avg"]
        assert m.shape == p.shape, name
        # each state tensor is the same slice of the old one as its weight
        for dim in range(p.dim()):
            if p.shape[dim] != old_w.shape[dim]:
                assert torch.equal(p.detach(), old_w.index_select(dim, keep)), name
                assert torch.equal(m, old_m.index_select(dim, keep)), name
    assert params["a1.weight"].shape == (6, 6, 3, 3) and params["bn.weight"].shape == (6,)
    opt.step()   # the optimizer still works on the new tensors


class _Sorts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.sort(self.conv(x), dim=1).values   # mixes channels: cannot be pruned through
        return self.fc(y.mean((2, 3)))


def test_unsupported_op_is_named_and_the_model_untouched():
    model = _Sorts()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(fmprune.UnsupportedModelError, match=r"'sort' at node 'sort'.*ignore=\['sort'\]"):
        fmprune.trace(model, torch.zeros(1, 3, 8, 8))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    graph = fmprune.trace(model, torch.zeros(1, 3, 8, 8), ignore=["sort"])
    assert graph.groups == [] and any("sort" in n for n in graph.notes)


def test_unknown_module_suggests_register_or_ignore():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ChannelShuffle(2), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 6, 6))
    with pytest.raises(fmprune.UnsupportedModelError, match=r"module '1' \(ChannelShuffle\).*register_layer.*ignore=\['1'\]"):
        fmprune.trace(model, torch.zeros(1, 3, 6, 6))


def test_data_dependent_control_flow_is_refused_up_front():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return y if y.sum() > 0 else -y
    with pytest.raises(fmprune.UnsupportedModelError, match="cannot trace Branchy"):
        fmprune.trace(Branchy(), torch.zeros(1, 3, 6, 6))


def test_example_inputs_of_the_wrong_shape_are_one_line_naming_the_ops_own_error(capfd):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(fmprune.UnsupportedModelError,
                       match=r"^Sequential does not run on the example inputs \(RuntimeError at _0: .*expected "
                             r"input\[1, 1, 28, 28\] to have 3 channels, but got 1 channels instead\)$"):
        fmprune.trace(model, torch.zeros(1, 1, 28, 28))
    assert capfd.readouterr().err == ""          # no traceback printed on the way


def test_output_layer_and_bad_requests():
    model, x = _model("flatten")
    graph = fmprune.trace(model, x[:1])
    with pytest.raises(PruningError, match="'fc3' is not prunable"):
        graph.remove("fc3", [0])
    with pytest.raises(PruningError, match="unknown group 'nope'"):
        graph.remove("nope", [0])
    with pytest.raises(PruningError, match="cannot remove its last map"):
        graph.remove("conv", [0, 1, 2, 3])
    with pytest.raises(PruningError, match="out of range"):
        graph.remove("fc2", [12])


def test_hard_coded_reshape_keeps_the_maps_it_depends_on():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 36, 2)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).view(-1, 144))
    graph = fmprune.trace(Fixed(), torch.zeros(1, 1, 6, 6))
    assert graph.groups == [] and any("constant size 144" in n for n in graph.notes)


class Scale(nn.Module):
    """A user layer: per-channel learnable scale (the tracer cannot see inside once registered)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        return x * self.s.view(1, -1, 1, 1)


def test_register_layer_teaches_a_custom_layer():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), Scale(6), nn.ReLU(), nn.Conv2d(6, 2, 1))
    x = torch.randn(2, 3, 6, 6)
    # without an adapter the constant-shaped parameter pins the maps it scales
    assert fmprune.trace(model, x[:1]).groups == []
    fmprune.register_layer(Scale, ChannelwiseAdapter(("s",), ()))
    try:
        graph = fmprune.trace(model, x[:1])
        assert {g.name: g.size for g in graph.groups} == {"0": 6}
        expected = copy.deepcopy(model)
        with torch.no_grad():
            expected[0].weight[2] = 0
            expected[0].bias[2] = 0
        graph.remove("0", [2])
        assert model[1].s.shape == (5,)
        assert (model(x) - expected(x)).abs().max() < 1e-6
    finally:   # the registry is global: later tests must see Scale unregistered
        fmprune.unregister_layer(Scale)


def test_norms_across_channels_keep_their_maps_and_per_channel_ones_prune():
    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.gn = nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8)
            self.b, self.inorm = nn.Conv2d(8, 6, 3, padding=1), nn.GroupNorm(6, 6)
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            x = F.relu(self.inorm(self.b(F.relu(self.gn(self.a(x))))))
            return self.fc(x.mean((2, 3)))
    model = Norms().eval()
    x = torch.randn(2, 3, 8, 8)
    graph = fmprune.trace(model, x[:1])
    # GroupNorm(2, 8) mixes channels within a group: a's maps stay; GroupNorm(6, 6) is per channel
    assert {g.name: g.size for g in graph.groups} == {"b": 6}
    assert any("GroupNorm 'gn'" in n for n in graph.notes)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.b.weight[1] = 0
        reference.b.bias[1] = 0
        reference.inorm.weight[1] = 0
        reference.inorm.bias[1] = 0
    graph.remove("b", [1])
    assert model.inorm.num_channels == model.inorm.num_groups == 5
    assert (model(x) - reference(x)).abs().max() < 1e-5


def test_grouped_conv_keeps_its_maps_and_the_rest_prunes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2),
                          nn.ReLU(), nn.Conv2d(8, 6, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 2)).eval()
    graph = fmprune.trace(model, torch.zeros(1, 3, 8, 8))
    assert {g.name: g.size for g in graph.groups} == {"4": 6}
    assert any("grouped convolution '2' (groups=2) keeps its input maps" in n for n in graph.notes)
