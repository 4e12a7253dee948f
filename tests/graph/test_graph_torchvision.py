"""Real architectures from torchvision (random weights, 10 classes, small inputs): trace, remove
30 % of every group, the model still runs; zeroed == shrunk on resnet18 and mobilenet_v2."""

from __future__ import annotations

import copy

import pytest
import torch

import fmprune
from fmprune.models.spec import ModelSpec, build_model
from fmprune.models.torchvision_models import torchvision_installed
from support.graph_models import randomize_norms, zero_maps

pytestmark = pytest.mark.skipif(not torchvision_installed(),
                                reason="torchvision not installed (pip install 'fmprune[torchvision]')")

MODELS = {   # name: (input size, groups expected)
    "resnet18": (64, 12),         # 4 residual streams (the first with the stem) + the first conv of 8 blocks
    "vgg11_bn": (32, 8 + 2),          # 8 convs, 2 hidden classifier Linears
    "mobilenet_v2": (32, 25),     # stem (tied to block 0 depthwise), 16 expansions, 7 stage streams, last conv
    "densenet121": (32, 120),
}


def _build(name: str, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelSpec(f"torchvision:{name}", num_classes=10, input_shape=(3, size, size)))
    return randomize_norms(model)


@pytest.mark.parametrize("name", list(MODELS))
def test_trace_and_remove_thirty_percent_of_every_group(name):
    size, n_groups = MODELS[name]
    model = _build(name, size)
    x = torch.randn(2, 3, size, size)
    graph = fmprune.trace(model, x[:1])
    assert len(graph.groups) == n_groups
    params, macs = graph.total_params(), graph.total_macs()
    assert macs == fmprune.costs.count_macs(model, x[:1])   # the graph's MACs = the hooks' MACs
    for g in graph.groups:
        k = int(0.3 * g.size)
        if k:
            graph.remove(g.name, list(range(0, 2 * k, 2))[:k] if 2 * k <= g.size else list(range(k)))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert graph.total_params() < 0.75 * params and graph.total_macs() < 0.75 * macs
    assert graph.total_macs() == fmprune.costs.count_macs(model, x[:1])


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_zeroed_equals_shrunk(name):
    size = MODELS[name][0]
    model = _build(name, size)
    reference = copy.deepcopy(model)
    x = torch.randn(3, 3, size, size)
    graph = fmprune.trace(model, x[:1])
    ref_graph = fmprune.trace(reference, x[:1])
    for round_ in range(2):
        for g in graph.groups:
            k = max(1, g.size // 5)
            drop = list(range(round_, round_ + k))
            originals = [g.original[i] for i in drop]
            alive = ref_graph.alive(g.name)
            zero_maps(reference, ref_graph.positions(g.name, [alive.index(o) for o in originals]))
            graph.remove(g.name, drop)
    with torch.no_grad():
        diff = (model(x) - reference(x)).abs().max().item()
        scale = reference(x).abs().max().item()
    assert diff <= 1e-4 * max(1.0, scale), f"shrunk and zeroed differ by {diff:.3g}"
