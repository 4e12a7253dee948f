"""The chain fast path's exact shortcuts: the projection through the linear head, the lazy
evaluation cache, and the fast path being built at once in a run that never retrains."""

import copy

import pytest
import torch

from support.engine_helpers import chain_engine, remove_maps
from fmprune.criteria import create_criterion
from fmprune.engine.fast.chain_engine import ActivationCache
from fmprune.graph.chain import trace

# removals of every kind: fc1 (terms subtracted from R), conv2 (Y loses terms, R recomputed),
# conv1 (Y follows the moved pooling winners), several maps at once
STEPS = ((None, None), ("fc1", [3]), ("fc1", [0, 7]), ("conv2", [1]), ("fc1", [2]), ("conv1", [0]),
         ("fc1", [5]), ("conv2", [0, 4]), ("conv1", [1, 3]), ("fc1", [1]))


def _remove(topo, caches, layer, maps):
    info = topo.prunable(layer)
    weight = topo.stages[info.index + 1].module.weight
    contributions = [c.contribution(info.index, torch.tensor(maps), weight, info.flatten_factor) for c in caches]
    keep = remove_maps(topo, layer, maps)
    for c, contribution in zip(caches, contributions):
        c.apply_removal(info.index, keep, contribution)


def test_head_projection_equals_the_dense_backward_through_removals(small_trained, splits):
    topo = trace(copy.deepcopy(small_trained), (1, 28, 28))
    calib = splits.train.subset(300)
    cache = ActivationCache(topo, calib)
    for layer, maps in STEPS:
        if layer is not None:
            _remove(topo, [cache], layer, maps)
        fast = cache.grad_dot_activations(0)
        assert cache.head is not None, "the head projection must be in use"
        dense = ActivationCache(topo, calib, paths="dense").grad_dot_activations(0)
        assert sorted(fast) == sorted(dense)
        for i in dense:
            err = float((fast[i] - dense[i]).abs().max())
            assert torch.allclose(fast[i], dense[i], rtol=1e-4, atol=1e-6), f"{layer} stage {i}: max diff {err}"


def test_lazy_evaluation_cache_keeps_the_logits_of_a_fresh_forward(small_trained, splits):
    topo = trace(copy.deepcopy(small_trained), (1, 28, 28))
    ev = splits.val.subset(400)
    lazy, compact = ActivationCache(topo, ev, lazy=True), ActivationCache(topo, ev)
    for layer, maps in STEPS[1:]:
        _remove(topo, [lazy, compact], layer, maps)
        with torch.no_grad():
            fresh = topo.forward(ev.images)
        for cache in (lazy, compact):
            err = float((cache.logits - fresh).abs().max())
            assert err <= 1e-4, f"after {layer} {maps}: max logit diff {err}"
    assert any(c is not None for c in lazy._cols), "lazy columns must be in use"


@pytest.mark.parametrize("retrained", [False, True])
def test_fast_paths_are_built_at_once_unless_the_weights_changed(small_trained, splits, retrained):
    """A run that never retrains pays for the head once, at its first round (no stall after the
    first step); after a rebuild (retraining) the first round stays dense."""
    topo = trace(copy.deepcopy(small_trained), (1, 28, 28))
    engine = chain_engine(topo, create_criterion("taylor"), splits.val.subset(200), splits.train.subset(200),
                          topo.prunable_names, "l2")
    if retrained:
        engine.invalidate_all()
    engine.select(1)
    assert (engine.calib_cache.head is None) == retrained
    engine.remove_selected(engine.select(1))
    engine.select(1)
    assert engine.calib_cache.head is not None
