import pytest
import torch
import torch.nn.functional as F

from fmprune.criteria import (Criterion, LayerContext, create_criterion, flops_regularize, mflops,
                              normalize)
from fmprune.data import Split
from fmprune.engine.fast.chain_engine import CachedProvider, ActivationCache, layer_context
from support.engine_helpers import chain_engine
from fmprune.errors import FmpruneError
from fmprune.models import LeNet
from fmprune.graph.chain import trace


@pytest.fixture
def tiny():
    torch.manual_seed(3)
    model = LeNet(widths=(4, 5, 6)).eval()
    x = torch.rand(7, 1, 28, 28)
    y = torch.randint(0, 10, (7,))
    return model, trace(model, (1, 28, 28)), Split(x, y)


def scores_for(name, topo, split):
    provider = CachedProvider(ActivationCache(topo, split), 0)
    g = torch.Generator().manual_seed(0)
    crit = create_criterion(name)
    return {n: crit.score_layer(layer_context(topo.stage(n), provider, g)) for n in topo.prunable_names}


def test_min_weight_is_sum_of_absolute_filter_weights(tiny):
    model, topo, split = tiny
    s = scores_for("min_weight", topo, split)
    k = 2
    assert float(s["conv2"][k]) == pytest.approx(sum(abs(float(w)) for w in model.conv2.weight[k].detach().flatten()), rel=1e-6)
    assert torch.allclose(s["fc1"], model.fc1.weight.detach().abs().sum(1))


def test_mean_activation_is_mean_post_relu_before_pooling(tiny):
    model, topo, split = tiny
    s = scores_for("mean_activation", topo, split)
    a1 = F.relu(model.conv1(split.images))              # N x 4 x 28 x 28, before pooling
    assert torch.allclose(s["conv1"], a1.mean(dim=(0, 2, 3)), atol=1e-6)


def test_taylor_matches_explicit_autograd_on_the_feature_maps(tiny):
    model, topo, split = tiny
    s = scores_for("taylor", topo, split)
    x, y = split.images, split.labels
    # explicit: per example n and map k, |mean over the (pre-pooling) map of dC_n/dz * z|
    a1 = F.relu(model.conv1(x)).detach().requires_grad_(True)
    a2 = F.relu(model.conv2(F.max_pool2d(a1, 2)))
    a2.retain_grad()
    h = F.relu(model.fc1(torch.flatten(F.max_pool2d(a2, 2), 1)))
    h.retain_grad()
    F.cross_entropy(model.fc2(h), y, reduction="sum").backward()  # sum: each C_n's own gradient
    expected = {
        "conv1": (a1.grad * a1).mean(dim=(2, 3)).abs().mean(0),
        "conv2": (a2.grad * a2).mean(dim=(2, 3)).abs().mean(0),
        "fc1": (h.grad * h).abs().mean(0),
    }
    for n in expected:
        assert torch.allclose(s[n], expected[n].detach(), rtol=1e-4, atol=1e-9), n


def test_l2_gives_unit_norm_and_l1_unit_sum_per_layer():
    scores = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([1.0, 1.0, 2.0])}
    l2 = normalize(scores, "l2")
    assert all(torch.isclose(v.norm(), torch.tensor(1.0)) for v in l2.values())
    assert torch.allclose(l2["a"], torch.tensor([0.6, 0.8]))
    assert torch.isclose(normalize(scores, "l1")["b"].sum(), torch.tensor(1.0))
    with pytest.raises(FmpruneError, match="unknown normalisation 'l3'"):
        normalize(scores, "l3")


def test_flops_term_shifts_scores_by_exactly_lambda_times_cost(tiny):
    _, topo, split = tiny
    base = {n: torch.rand(topo.stage(n).n_maps, dtype=torch.float64) for n in topo.prunable_names}
    costs = {n: mflops(m) for n, m in topo.macs_per_map().items()}
    reg = flops_regularize(base, costs, 1e-3)
    for n in base:
        assert torch.allclose(base[n] - reg[n], torch.full_like(base[n], 1e-3 * costs[n]), rtol=0, atol=1e-15)
    # conv1 of LeNet(4, 5, 6): own filter 784*25 + conv2 slice 196*5*25 MACs, in MFLOPs
    assert costs["conv1"] == pytest.approx(2 * (784 * 25 + 196 * 5 * 25) / 1e6)


def test_random_is_seeded():
    split = Split(torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    picks = []
    for _ in range(2):
        topo = trace(LeNet(widths=(4, 5, 6)), (1, 28, 28))
        eng = chain_engine(topo, create_criterion("random"), split, split, topo.prunable_names, seed=5)
        picks.append([(s.layer, s.original) for _ in range(6) for s in _step(eng)])
    assert picks[0] == picks[1]


def _step(eng):
    chosen = eng.select(1)
    eng.remove_selected(chosen)
    return chosen


class LargestBiasFirst(Criterion):
    """A user's criterion: prune the map with the largest bias first."""

    name = "test_largest_bias"
    reads = frozenset({"weights"})

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return -ctx.module.bias.detach()


def test_user_criterion_works_by_name(tiny):
    model, topo, split = tiny
    eng = chain_engine(topo, create_criterion("test_largest_bias"), split, split, ["fc1"])
    expected = int(model.fc1.bias.argmax())
    assert _step(eng)[0].original == expected
    assert "test_largest_bias" in Criterion.registry


def test_unknown_criterion_is_a_clear_error():
    with pytest.raises(FmpruneError, match="unknown criterion 'magic'"):
        create_criterion("magic")


@pytest.fixture(autouse=True, scope="module")
def _unregister_test_criterion():
    """The criterion this module registers is gone once its tests ran (the registry is global)."""
    yield
    Criterion.registry.pop("test_largest_bias", None)
