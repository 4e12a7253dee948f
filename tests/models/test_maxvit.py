"""torchvision's MaxViT-T at its smallest input (224 x 224), random weights: its window and grid
attention (heads split off a channels-last qkv by a reshape and a permute the label flow does
not follow) are kept whole, so its MBConv convs, squeeze-excitation and MLP units prune, exactly
(float64, a quarter of every group removed: equal to the zeroed reference)."""

from __future__ import annotations

import pytest
import torch

import fmprune
from fmprune.models.torchvision_models import torchvision_installed
from support.reference import prune_against_reference


@pytest.mark.slow   # about 20 s on two shared cores
@pytest.mark.skipif(not torchvision_installed(), reason="torchvision not installed")
def test_maxvit_prunes_exactly_with_its_attention_kept_whole():
    from fmprune.models.spec import ModelSpec, build_model
    torch.manual_seed(0)
    model = build_model(ModelSpec("torchvision:maxvit_t", num_classes=10, input_shape=(3, 224, 224))).eval()
    x = torch.randn(1, 3, 224, 224)
    graph = fmprune.trace(model, x)
    sizes = graph.sizes()
    assert len(sizes) == 47 and sizes["blocks.0.layers.0.layers.window_attention.mlp_layer.1"] == 256
    assert any("RelativePositionalMultiHeadAttention 'blocks.0.layers.0.layers.window_attention.attn_layer.1' "
               "is kept whole" in n for n in graph.notes)
    assert prune_against_reference(model, x, rounds=1, fraction=0.25) < 1e-8
