import random

import pytest
import torch
from torch import nn

from fmprune.errors import PruningError
from fmprune.models import LeNet
from fmprune.surgery import take
from support.engine_helpers import graph_of, remove_maps
from fmprune.graph.chain import trace


def masked_copy(model: LeNet, removed: dict[str, list[int]]) -> LeNet:
    """The dense model with removed maps zeroed: producer filter and bias, consumer slice."""
    dense = LeNet(widths=(model.conv1.out_channels, model.conv2.out_channels, model.fc1.out_features))
    dense.load_state_dict(model.state_dict())
    consumers = {"conv1": ("conv2", 1), "conv2": ("fc1", 49), "fc1": ("fc2", 1)}
    with torch.no_grad():
        for layer, maps in removed.items():
            prod = getattr(dense, layer)
            cons, f = consumers[layer]
            for k in maps:
                prod.weight[k] = 0
                prod.bias[k] = 0
                getattr(dense, cons).weight[:, k * f:(k + 1) * f] = 0
    return dense.eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shrunk_model_equals_masked_model_and_counts_shrink_exactly(seed):
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = LeNet(widths=(12, 16, 40)).eval()
    x = torch.rand(16, 1, 28, 28)
    original = LeNet(widths=(12, 16, 40))
    original.load_state_dict(model.state_dict())
    topo = trace(model, (1, 28, 28))
    alive = {n: list(range(topo.stage(n).n_maps)) for n in topo.prunable_names}
    removed: dict[str, list[int]] = {n: [] for n in alive}
    for _ in range(25):
        layer = rng.choice([n for n in alive if len(alive[n]) > 1])
        k = rng.randrange(len(alive[layer]))
        removed[layer].append(alive[layer].pop(k))
        remove_maps(topo, layer, [k])
    out = model(x)
    ref = masked_copy(original, removed)(x)
    assert (out - ref).abs().max() <= 1e-5
    c1, c2, f1 = (len(alive[n]) for n in ("conv1", "conv2", "fc1"))
    expected_params = (25 * c1 + c1) + (25 * c1 * c2 + c2) + (49 * c2 * f1 + f1) + (10 * f1 + 10)
    expected_macs = 784 * 25 * c1 + 196 * 25 * c1 * c2 + 49 * c2 * f1 + 10 * f1
    graph = graph_of(topo)
    assert graph.total_params() == expected_params == sum(p.numel() for p in model.parameters())
    assert graph.total_macs() == expected_macs
    assert not any(isinstance(m, nn.Module) and m._forward_hooks for m in model.modules())


def test_last_map_and_bad_indices_are_refused():
    topo = trace(LeNet(widths=(3, 4, 5)), (1, 28, 28))
    with pytest.raises(PruningError, match="last map"):
        remove_maps(topo, "conv1", [0, 1, 2])
    remove_maps(topo, "conv1", [0, 1])
    with pytest.raises(PruningError, match="last map"):
        remove_maps(topo, "conv1", [0])
    with pytest.raises(PruningError, match="out of range"):
        remove_maps(topo, "fc1", [7])
    with pytest.raises(PruningError, match="duplicate"):
        remove_maps(topo, "fc1", [1, 1])
    with pytest.raises(PruningError, match="'fc2' is not prunable"):
        remove_maps(topo, "fc2", [0])


def test_adam_state_is_sliced_with_the_parameters():
    torch.manual_seed(0)
    model = LeNet(widths=(4, 6, 8))
    topo = trace(model, (1, 28, 28))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = model(torch.rand(5, 1, 28, 28)).sum()
    loss.backward()
    opt.step()
    before_rows = opt.state[model.conv2.weight]["exp_avg"].clone()
    before_fc1 = opt.state[model.fc1.weight]["exp_avg_sq"].clone()
    remove_maps(topo, "conv2", [1, 4], optimizer=opt)
    keep = [0, 2, 3, 5]
    assert torch.equal(opt.state[model.conv2.weight]["exp_avg"], before_rows[keep])
    cols = torch.tensor([k * 49 + j for k in keep for j in range(49)])
    assert torch.equal(opt.state[model.fc1.weight]["exp_avg_sq"], before_fc1[:, cols])
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in params for p in model.parameters())
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    opt.step()  # the sliced state fits the new shapes


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5 * 14 * 14, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(torch.relu(self.conv2(x)), 1))


def test_batchnorm_entries_are_removed_with_their_map():
    torch.manual_seed(0)
    model = ConvBN()
    model.bn1.running_mean.uniform_(-1, 1)
    model.bn1.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.rand(4, 1, 28, 28)
    topo = trace(model, (1, 28, 28))
    assert topo.stage("conv1").norms == ["bn1"]
    with torch.no_grad():
        masked = ConvBN().eval()
        masked.load_state_dict(model.state_dict())
        masked.conv2.weight[:, 2] = 0
    remove_maps(topo, "conv1", [2])
    assert model.bn1.running_mean.shape == (5,) and model.bn1.weight.shape == (5,)
    assert (model(x) - masked(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("keep", [[0, 1, 2, 4, 5], [3], [0, 2, 4, 6], list(range(1, 7)), [5, 1, 3]])
def test_take_equals_index_select(keep):
    t = torch.randn(7, 7, 4, 2)
    index = torch.tensor(keep)
    for dim in (0, 1):
        assert torch.equal(take(t, dim, index), t.index_select(dim, index))
    assert torch.equal(take(t, 1, index, max_runs=1), t.index_select(1, index))
