"""Every torchvision classification model, random weights, 10 classes, a small input: it prunes
exactly (float64, a quarter of every group removed at random: the pruned model equals the model
whose removed maps are zeroed and whose LayerNorms normalise over the kept channels, relative
difference below 1e-8) or fmprune refuses it with UnsupportedModelError naming the op and the way
out. Vision transformers must prune (``MUST_PRUNE``): ViT's heads and MLP units, Swin's MLP units
(its window attention and patch merging kept whole); removing a head is compared with zeroing its
v rows and out_proj columns (``support.reference``). Large models are marked slow (``-m
slow``); the default run takes a few small ones. The table of results (model | groups | heads /
MLP groups | trace seconds | exact or refused) is printed at the end."""

from __future__ import annotations

import re
import time

import pytest
import torch

import fmprune
from fmprune.models.spec import ModelSpec, build_model
from fmprune.models.torchvision_models import torchvision_classifiers, torchvision_installed
from support.reference import prune_against_reference

pytestmark = pytest.mark.skipif(not torchvision_installed(),
                                reason="torchvision not installed (pip install 'fmprune[torchvision]')")

FAST = {"resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_1", "mnasnet0_5"}
SIZES = {"inception_v3": 96, "vit_b_16": 224, "vit_b_32": 224, "vit_l_16": 224, "vit_l_32": 224,
         "vit_h_14": 224, "maxvit_t": 224}   # the smallest input each takes; 64 x 64 for the rest
# refusing these is a regression: every one prunes exactly (the rest may be refused with advice)
MUST_PRUNE = {"vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14", "swin_t", "swin_s", "swin_b",
              "swin_v2_t", "swin_v2_s", "swin_v2_b"}
SMALL = 32   # the fast ones run at 32 x 32: the same ops, a quarter of the arithmetic
# what a refusal must name: the op (a node or module) and the way out (ignore=[...] or register_layer)
REFUSAL = re.compile(r"cannot prune through .* (at node|module) .*(ignore=\[|register_layer)")


def _names() -> list:
    names = torchvision_classifiers() if torchvision_installed() else []
    return [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in names]


@pytest.fixture(scope="module")
def table(request):
    rows = _Rows()
    yield rows
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if rows and reporter is not None:
        reporter.write_line("\nmodel | groups | heads / MLP groups | trace s | result")
        for row in rows:
            reporter.write_line(row)


class _Rows(list):
    """The table's rows, each also printed as it comes (seen with -s while a long run goes on)."""

    def append(self, row: str) -> None:
        print(f"\n{row}", flush=True)
        super().append(row)


@pytest.mark.parametrize("name", _names())
def test_prunes_exactly_or_is_refused(name, table):
    size = SIZES.get(name, SMALL if name in FAST else 64)
    torch.manual_seed(0)
    model = build_model(ModelSpec(f"torchvision:{name}", num_classes=10, input_shape=(3, size, size)))
    x = torch.randn(2, 3, size, size)
    start = time.perf_counter()
    try:
        graph = fmprune.trace(model, x[:1])
    except fmprune.UnsupportedModelError as e:
        table.append(f"{name} | - | - | {time.perf_counter() - start:.1f} | refused: {e}")
        assert REFUSAL.search(str(e)), f"the refusal names no op or no way out: {e}"
        assert name not in MUST_PRUNE, f"{name} must prune: {e}"
        return
    seconds = time.perf_counter() - start
    diff = prune_against_reference(model, x, rounds=1, fraction=0.25)
    table.append(f"{name} | {len(graph.groups)} | {_heads_and_mlp(graph)} | {seconds:.1f} | exact ({diff:.1e})")
    assert graph.groups, "nothing to prune"
    assert diff < 1e-8, f"pruned and reference differ by {diff:.3g} (relative)"


def _heads_and_mlp(graph: fmprune.Graph) -> str:
    """How many groups are an attention's heads, and how many a transformer MLP's hidden units."""
    heads = sum(1 for g in graph.groups if any(r.name.endswith(":heads") for r in g.records))
    mlp = sum(1 for g in graph.groups if ".mlp." in g.name)
    return f"{heads} / {mlp}"
