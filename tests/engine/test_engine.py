"""The fast engine against the naive masked loop: same maps, same accuracies, same scores."""

import copy

import pytest
import torch

from fmprune.criteria import create_criterion
from support.engine_helpers import chain_engine, remove_maps
from fmprune.engine.reference import NaiveLoop
from fmprune.graph.chain import trace


@pytest.mark.parametrize("criterion, norm, lam, scope, k", [
    ("taylor", "l2", 0.0, "all", 1),
    ("taylor", "none", 1e-3, "all", 2),
    ("taylor", "l1", 0.0, "conv2", 1),
    ("min_weight", "l2", 1e-3, "all", 3),
    ("mean_activation", "none", 0.0, "all", 1),
    ("mean_activation", "l2", 0.0, "fc1", 2),
])
def test_engine_makes_the_naive_loops_decisions(small_trained, splits, criterion, norm, lam, scope, k):
    model = copy.deepcopy(small_trained).eval()
    topo = trace(model, (1, 28, 28))
    scope_layers = topo.scope(scope)
    ev, cal = splits.val, splits.train.subset(128)
    naive = NaiveLoop(model, (1, 28, 28), create_criterion(criterion), ev, cal, scope_layers, norm, lam)
    engine = chain_engine(topo, create_criterion(criterion), ev, cal, scope_layers, norm, lam)
    removable = sum(topo.stage(n).n_maps - 1 for n in scope_layers)
    for _ in range(removable // k):
        ref, ref_acc = naive.step(k)
        chosen = engine.select(k)
        engine.remove_selected(chosen)
        assert [(c.layer, c.original) for c in chosen] == [(c.layer, c.original) for c in ref]
        assert [c.score for c in chosen] == pytest.approx([c.score for c in ref], rel=1e-4, abs=1e-7)
        assert engine.accuracy() == pytest.approx(ref_acc, abs=1e-9)
    assert all(len(engine.alive[n]) >= 1 for n in scope_layers)
    x = splits.test.images[:32]
    assert (topo.forward(x) - naive.topology.forward(x)).abs().max() <= 1e-5


def test_whole_scope_prunes_down_to_one_map_per_layer(small_trained, splits):
    model = copy.deepcopy(small_trained).eval()
    topo = trace(model, (1, 28, 28))
    engine = chain_engine(topo, create_criterion("taylor"), splits.val, splits.train.subset(64),
                           topo.prunable_names, "l2")
    while chosen := engine.select(4):
        engine.remove_selected(chosen)
    assert {n: topo.stage(n).n_maps for n in topo.prunable_names} == {"conv1": 1, "conv2": 1, "fc1": 1}


def test_winner_fast_path_equals_the_dense_backward_through_removals(small_trained, splits):
    """Taylor products of conv1 from conv2's pool winners == the transposed-conv backward, also
    after conv1 removals (winners move) and conv2 removals (rows drop)."""
    from fmprune.engine.fast.chain_engine import ActivationCache

    model = copy.deepcopy(small_trained)
    topo = trace(model, (1, 28, 28))
    calib = splits.train.subset(300)
    cache = ActivationCache(topo, calib, paths="winners")
    for layer, maps in ((None, None), ("conv1", [2]), ("conv2", [0, 5]), ("conv1", [0]), ("fc1", [3])):
        if layer is not None:
            info = topo.prunable(layer)
            drop = torch.tensor(maps)
            contribution = cache.contribution(info.index, drop, topo.stages[info.index + 1].module.weight,
                                              info.flatten_factor)
            cache.apply_removal(info.index, remove_maps(topo, layer, maps), contribution)
        fast = cache.grad_dot_activations(0)
        assert 1 in cache._winners, "the fast path must be in use"
        dense = ActivationCache(topo, calib, paths="dense").grad_dot_activations(0)
        for i in dense:
            assert torch.allclose(fast[i], dense[i], rtol=1e-5, atol=1e-6), (layer, i)

