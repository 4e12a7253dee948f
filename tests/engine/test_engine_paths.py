"""The chain fast path and the general autograd path make the same decisions on LeNet, and the
general path scores groups of residual models as the sum of their producers' criteria."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import fmprune
from fmprune.criteria import READS_ALL, Criterion, available_criteria, create_criterion
from fmprune.data import Split
from fmprune.engine import ChainEngine, GraphEngine, create_engine
from support.graph_models import ResidualBN, randomize_norms


# Every criterion fmprune registers that the chain path computes (what it reads is within
# READS_ALL; the others always take the general path), with L2 normalisation; then normalisations,
# the FLOPs term and several maps per step on a few. A criterion added to fmprune is checked with
# no edit here; those other test modules register for a while (and remove) are left out.
ON_BOTH_PATHS = [name for name in available_criteria() if Criterion.registry[name].reads <= READS_ALL
                 and Criterion.registry[name].__module__.startswith("fmprune.")]


@pytest.mark.parametrize("criterion, norm, lam, k", [
    *[(name, "l2", 0.0, 1) for name in ON_BOTH_PATHS],
    ("taylor", "none", 1e-3, 1),
    ("taylor", "rms", 0.0, 3),
    ("min_weight", "l1", 1e-3, 2),
    ("random", "none", 0.0, 1),
])
def test_chain_and_general_paths_decide_alike_for_30_steps(small_trained, splits, criterion, norm, lam, k):
    ev, cal = splits.val, splits.train.subset(200)
    engines = []
    for fast in (True, False):
        model = copy.deepcopy(small_trained).eval()
        graph = fmprune.trace(model, torch.zeros(1, 1, 28, 28))
        engines.append(create_engine(graph, create_criterion(criterion), ev, cal, graph.names, norm, lam,
                                     fast=fast))
    chain, general = engines
    assert isinstance(chain, ChainEngine) and isinstance(general, GraphEngine)
    for step in range(30):
        a, b = chain.select(k), general.select(k)
        assert [(s.layer, s.original) for s in a] == [(s.layer, s.original) for s in b], f"step {step}"
        assert [s.score for s in a] == pytest.approx([s.score for s in b], rel=1e-4, abs=1e-7)
        chain.remove_selected(a)
        general.remove_selected(b)
        assert chain.accuracy() == pytest.approx(general.accuracy(), abs=1e-6)


def test_group_taylor_is_the_sum_over_its_producers():
    """Hand computation on a residual model: the stem group's score is the Taylor score of the
    stem's feature map (after BN and ReLU) plus those of b2 and d2 (after BN, before the add)."""
    torch.manual_seed(0)
    model = randomize_norms(ResidualBN())
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    graph = fmprune.trace(model, x[:1])
    engine = create_engine(graph, create_criterion("taylor"), Split(x, y), Split(x, y), graph.names)
    assert isinstance(engine, GraphEngine)
    scores = engine.raw_scores()["stem"]
    # explicit autograd on the three feature maps the stem group owns
    m = model
    s = F.relu(m.bn(m.stem(x)))
    s.retain_grad()
    b2 = m.b2(m.a2(F.relu(m.b1(m.a1(s)))))
    b2.retain_grad()
    h = F.relu(s + b2)
    d2 = m.d2(m.c2(F.relu(m.d1(m.c1(h)))))
    d2.retain_grad()
    h = F.relu(h + d2)
    h = F.relu(m.down(h) + m.e1(h))
    F.cross_entropy(m.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)), y, reduction="sum").backward()
    expected = sum((t.grad * t).mean((2, 3)).abs().mean(0) for t in (s, b2, d2))
    assert torch.allclose(scores, expected.detach(), rtol=1e-4, atol=1e-8)
