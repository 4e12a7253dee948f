"""The oracle and the further criteria (apoz, activation_std, weight_grad, taylor_bn, obd), each
against a hand computation on a tiny model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fmprune
from fmprune.criteria import create_criterion
from fmprune.data import Split
from fmprune.engine import GraphEngine, create_engine
from fmprune.engine.general import masked
from fmprune.errors import FmpruneError
from fmprune.models import LeNet
from support.graph_models import Concat, Depthwise, ResidualBN


def _randomise_norms(model: nn.Module) -> nn.Module:
    """BatchNorms with statistics and affine parameters far from the identity (eval mode)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def _case(name: str):
    torch.manual_seed(0)
    if name == "lenet":
        return LeNet(widths=(4, 5, 6)).eval(), torch.rand(11, 1, 28, 28), 10
    model = {"residual": ResidualBN, "concat": Concat, "depthwise": Depthwise}[name]()
    classes = {"residual": 4, "concat": 3, "depthwise": 3}[name]
    return _randomise_norms(model), torch.rand(9, 3, 8, 8), classes


def _scores(model: nn.Module, split: Split, criterion: str, fast: bool = True):
    graph = fmprune.trace(model, split.images[:1])
    engine = create_engine(graph, create_criterion(criterion), split, split, graph.names, fast=fast)
    return graph, engine, engine.raw_scores()


def _removed_loss_change(model: nn.Module, split: Split, group: str, j: int) -> float:
    """By hand: physically remove map j of the group from a copy and compare mean losses."""
    pruned = copy.deepcopy(model).eval()
    graph = fmprune.trace(pruned, split.images[:1])
    with torch.no_grad():
        before = F.cross_entropy(pruned(split.images), split.labels).item()
        graph.remove(group, [j])
        return F.cross_entropy(pruned(split.images), split.labels).item() - before


@pytest.mark.parametrize("name", ["lenet", "residual", "concat", "depthwise"])
def test_oracle_is_the_loss_change_of_removing_each_map_alone(name):
    model, x, classes = _case(name)
    split = Split(x, torch.randint(0, classes, (len(x),), generator=torch.Generator().manual_seed(2)))
    graph, engine, scores = _scores(model, split, "oracle")
    assert isinstance(engine, GraphEngine)
    for group in graph.names:
        expected = torch.tensor([_removed_loss_change(model, split, group, j) for j in range(graph.group(group).size)])
        assert torch.allclose(scores[group].float(), expected, atol=2e-6), group
    assert any(bool((s != 0).any()) for s in scores.values())
    _, _, absolute = _scores(model, split, "oracle_abs")
    for group in graph.names:
        assert torch.allclose(absolute[group], scores[group].abs())


def test_oracle_stays_exact_after_removals_and_one_map_at_a_time(monkeypatch):
    model, x, _ = _case("residual")
    split = Split(x, torch.randint(0, 4, (len(x),), generator=torch.Generator().manual_seed(3)))
    graph = fmprune.trace(model, x[:1])
    engine = GraphEngine(graph, create_criterion("oracle"), split, split, graph.names)
    engine.remove("stem", [0, 5])
    engine.remove("a1", [2])
    batched = engine.raw_scores()
    for group in ("stem", "a1", "down"):
        expected = torch.tensor([_removed_loss_change(model, split, group, j) for j in range(graph.group(group).size)])
        assert torch.allclose(batched[group].float(), expected, atol=2e-6), group
    monkeypatch.setattr(masked, "REPLAY_BUDGET", 1)   # one replica per replay
    engine.invalidate_all()
    single = engine.raw_scores()
    for group in graph.names:
        assert torch.allclose(single[group], batched[group], atol=1e-9)


def test_apoz_and_activation_std_by_hand():
    torch.manual_seed(4)
    model = LeNet(widths=(4, 5, 6)).eval()
    x = torch.rand(7, 1, 28, 28)
    split = Split(x, torch.randint(0, 10, (7,)))
    a1 = F.relu(model.conv1(x)).detach()
    h = F.relu(model.fc1(torch.flatten(F.max_pool2d(F.relu(model.conv2(F.max_pool2d(a1, 2))), 2), 1))).detach()
    for fast in (True, False):
        _, _, apoz = _scores(model, split, "apoz", fast)
        _, _, std = _scores(model, split, "activation_std", fast)
        k = 2
        values = a1[:, k].flatten()
        assert float(apoz["conv1"][k]) == pytest.approx(float((values > 0).float().mean()), rel=1e-6)
        assert float(std["conv1"][k]) == pytest.approx(float(values.std(correction=0)), rel=1e-4)
        assert torch.allclose(apoz["fc1"].float(), (h > 0).float().mean(0))
        assert torch.allclose(std["fc1"].float(), h.std(0, correction=0), atol=1e-6)


def _param_grads(model: nn.Module, split: Split) -> None:
    model.zero_grad()
    F.cross_entropy(model(split.images), split.labels).backward()


def test_weight_grad_is_squared_sum_of_weight_times_gradient_per_filter(small_trained, splits):
    model = copy.deepcopy(small_trained).eval()
    split = splits.train.subset(300)     # more than one calibration chunk
    _, engine, scores = _scores(model, split, "weight_grad")
    assert isinstance(engine, GraphEngine)
    _param_grads(model, split)
    for name in ("conv1", "conv2", "fc1"):
        layer = getattr(model, name)
        by_hand = ((layer.weight * layer.weight.grad).flatten(1).sum(1) + layer.bias * layer.bias.grad).detach()
        assert by_hand.abs().max() > 0
        assert torch.allclose(scores[name].float(), by_hand.square(), rtol=1e-3, atol=1e-6 * float(by_hand.square().max())), name


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c2, self.n2 = nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        x = F.relu(self.n1(self.c1(x)))
        x = F.relu(self.n2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


def test_taylor_bn_is_squared_first_order_term_of_the_batchnorm_scale_and_shift():
    torch.manual_seed(6)
    model = _randomise_norms(ConvBN())
    split = Split(torch.rand(8, 3, 6, 6), torch.randint(0, 3, (8,)))
    _, _, scores = _scores(model, split, "taylor_bn")
    _param_grads(model, split)
    for conv, norm in (("c1", model.n1), ("c2", model.n2)):
        by_hand = norm.weight * norm.weight.grad + norm.bias * norm.bias.grad
        assert torch.allclose(scores[conv].float(), by_hand.detach().square(), rtol=1e-3, atol=1e-12), conv


def test_taylor_bn_says_when_a_layer_has_no_batchnorm():
    model = LeNet(widths=(4, 5, 6)).eval()
    split = Split(torch.rand(3, 1, 28, 28), torch.randint(0, 10, (3,)))
    with pytest.raises(FmpruneError, match="no BatchNorm.*taylor_bn"):
        _scores(model, split, "taylor_bn")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(F.max_pool2d(torch.tanh(self.conv(x)), 2), 1))


def test_obd_is_half_fisher_diagonal_times_squared_weights_per_filter():
    torch.manual_seed(8)
    model = Tiny().eval()
    split = Split(torch.randn(10, 1, 6, 6), torch.randint(0, 3, (10,)))
    _, _, scores = _scores(model, split, "obd")
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for i in range(len(split)):   # one example at a time: its own gradient, squared
        model.zero_grad()
        F.cross_entropy(model(split.images[i:i + 1]), split.labels[i:i + 1]).backward()
        for name, p in model.named_parameters():
            fisher[name] += p.grad.square() / len(split)
    assert list(scores) == ["conv"]   # the output layer is never a group
    for layer in ("conv",):
        m = getattr(model, layer)
        by_hand = (0.5 * fisher[f"{layer}.weight"] * m.weight.square()).flatten(1).sum(1) \
            + 0.5 * fisher[f"{layer}.bias"] * m.bias.square()
        assert torch.allclose(scores[layer].float(), by_hand.detach(), rtol=1e-4, atol=1e-10), layer


def test_obd_hutchinson_is_half_hessian_diagonal_times_squared_weights_per_filter():
    torch.manual_seed(7)
    model = Tiny().eval()
    split = Split(torch.randn(12, 1, 6, 6), torch.randint(0, 3, (12,)))
    graph = fmprune.trace(model, split.images[:1])
    criterion = create_criterion("obd_hutchinson")
    criterion.samples = 3000     # Hutchinson's estimate, close to the exact diagonal
    scores = GraphEngine(graph, criterion, split, split, graph.names).raw_scores()
    names = [n for n, _ in model.conv.named_parameters()]
    params = tuple(p.detach().clone() for _, p in model.conv.named_parameters())

    def loss(*ps):
        out = torch.func.functional_call(model, dict(zip(["conv." + n for n in names], ps)), (split.images,))
        return F.cross_entropy(out, split.labels)

    hessians = torch.autograd.functional.hessian(loss, params)
    exact = torch.zeros(3)
    for i, p in enumerate(params):
        diag = torch.diagonal(hessians[i][i].reshape(p.numel(), p.numel())).reshape(p.shape)
        exact += (0.5 * diag * p.square()).reshape(3, -1).sum(1)
    assert torch.allclose(scores["conv"].float(), exact, rtol=0.1, atol=0.02 * float(exact.abs().max()))


def test_chain_fast_path_only_for_criteria_it_can_compute():
    model = LeNet(widths=(4, 5, 6)).eval()
    split = Split(torch.rand(3, 1, 28, 28), torch.randint(0, 10, (3,)))
    graph = fmprune.trace(model, split.images[:1])
    kinds = {name: type(create_engine(graph, create_criterion(name), split, split, graph.names)).__name__
             for name in ("taylor", "apoz", "activation_std", "oracle", "oracle_abs", "weight_grad", "obd",
                          "obd_hutchinson")}
    assert kinds == {"taylor": "ChainEngine", "apoz": "ChainEngine", "activation_std": "ChainEngine",
                     "oracle": "GraphEngine", "oracle_abs": "GraphEngine", "weight_grad": "GraphEngine",
                     "obd": "GraphEngine", "obd_hutchinson": "GraphEngine"}


def test_pruning_with_the_oracle_removes_the_map_whose_loss_change_is_smallest(splits, small_ckpt, tmp_path):
    config = fmprune.PruneConfig(criterion="oracle", normalize="none", steps=2, calibration=100, eval_size=200)
    summary = fmprune.run_pruning(small_ckpt, splits, config, tmp_path / "run")
    assert summary.steps == 2
    rows = (tmp_path / "run" / "steps.csv").read_text().splitlines()[2:]
    first = rows[0].split(",")
    ckpt = fmprune.load_checkpoint(small_ckpt)
    model, graph = ckpt.build_traced()
    from fmprune.data import calibration_subset
    scores = GraphEngine(graph, create_criterion("oracle"), splits.val, calibration_subset(splits.train, 100, 0),
                         graph.names).raw_scores()
    best = min(((float(s.min()), name, int(s.argmin())) for name, s in scores.items()))
    assert (first[1], int(first[2])) == (best[1], best[2])
    assert float(first[3]) == pytest.approx(best[0], rel=1e-5, abs=1e-9)
