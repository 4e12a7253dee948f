"""Vision transformers: a class token expanded over the batch and concatenated along the token
axis, a positional embedding added, nn.MultiheadAttention with its heads as a group, MLPs over
the last axis, LayerNorms over the embedding, the class token read with ``x[:, 0]``.

Random removals in every group must give exactly (float64) the reference model of
``support.reference`` (removed maps zeroed, LayerNorms over the kept channels), where removing
a head is zeroing its v rows *and* its out_proj columns: zeroing its q, k rows alone would not
do (its softmax turns uniform and still mixes v); with v and its out_proj columns zero its
contribution is exactly 0, which is what removal gives."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fmprune
from fmprune.layers import MultiheadAttentionAdapter, PrunedMultiheadAttention
from fmprune.models.torchvision_models import torchvision_installed
from support.reference import prune_against_reference, zero_heads
from support.transformer_models import AttentionWeightsUsed, SmallViT

BLOCK_GROUPS = {"blocks.0.attn": 4, "blocks.0.mlp.0": 12, "blocks.1.attn": 4, "blocks.1.mlp.0": 12}


@pytest.fixture
def prune_embedding():
    """nn.MultiheadAttention's embedding prunable for the duration of a test."""
    fmprune.register_layer(nn.MultiheadAttention, MultiheadAttentionAdapter(embedding=True))
    yield
    fmprune.register_layer(nn.MultiheadAttention, MultiheadAttentionAdapter())


def _vit() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return SmallViT().eval(), torch.randn(3, 3, 8, 8)


def test_heads_and_mlp_units_are_groups_and_prune_exactly():
    model, x = _vit()
    graph = fmprune.trace(model, x[:1])
    assert graph.sizes() == BLOCK_GROUPS   # the embedding (residual stream) is kept by default
    assert any("MultiheadAttentionAdapter(embedding=True)" in n for n in graph.notes)
    assert prune_against_reference(model, x, rounds=3) < 1e-12


def test_the_embedding_is_one_group_with_the_class_token_and_positional_embedding(prune_embedding):
    model, x = _vit()
    graph = fmprune.trace(model, x[:1])
    assert graph.sizes() == {"patch": 8, **BLOCK_GROUPS}
    graph.remove("patch", [1, 5])
    assert model.class_token.shape == (1, 1, 6) and model.pos_embedding.shape == (1, 5, 6)
    assert model.blocks[0].attn.in_proj_weight.shape == (24, 6) and model.blocks[1].mlp[3].out_features == 6
    assert prune_against_reference(*_vit(), rounds=3) < 1e-12


def test_removing_a_head_cuts_its_rows_and_columns():
    model, x = _vit()
    expected = copy.deepcopy(model).double()
    graph = fmprune.trace(model, x[:1])
    graph.remove("blocks.0.attn", [1, 2])
    attn = model.blocks[0].attn
    assert type(attn) is PrunedMultiheadAttention and attn.num_heads == 2 and attn.head_dim == 2
    assert attn.in_proj_weight.shape == (12, 8) and attn.in_proj_bias.shape == (12,)
    assert attn.out_proj.weight.shape == (8, 4)
    zero_heads(expected, {"blocks.0.attn:heads": {"in": [], "out": [1, 2]}})
    with torch.no_grad():
        assert (model.double()(x.double()) - expected(x.double())).abs().max() < 1e-12
        assert torch.equal(graph.graph_module(x.double()), model(x.double()))


def test_zeroing_q_and_k_of_a_head_is_not_removing_it():
    """Why the reference zeroes v and out_proj: a head with q, k zero attends uniformly."""
    model, x = _vit()
    model = model.double()
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.blocks[0].attn.in_proj_weight[2:4] = 0     # head 1 of 4 (head_dim 2): q rows
        zeroed.blocks[0].attn.in_proj_weight[10:12] = 0   # its k rows
        zeroed.blocks[0].attn.in_proj_bias[:16] = 0
        model.blocks[0].attn.in_proj_bias[:16] = 0
    fmprune.trace(model, x[:1].double()).remove("blocks.0.attn", [1])
    with torch.no_grad():
        assert (model(x.double()) - zeroed(x.double())).abs().max() > 1e-3


def test_a_head_costs_its_share():
    model, x = _vit()
    graph = fmprune.trace(model, x[:1])
    params, macs = graph.map_cost("blocks.0.attn")
    # 2 dims per head: q, k, v rows (3 * 2 * (8 + 1)) and out_proj columns (8 * 2); 5 tokens:
    # projections 5 * 3 * 2 * 8, scores and weighted values 2 * 5 * 5 * 2, out_proj 5 * 2 * 8
    assert params == 3 * 2 * 9 + 16
    assert macs == 5 * 3 * 2 * 8 + 2 * 25 * 2 + 5 * 2 * 8
    before = graph.total_macs()
    graph.remove("blocks.0.attn", [0])
    assert graph.total_macs() == before - macs
    assert sum(p.numel() for p in model.parameters()) == graph.total_params()


def test_heads_are_kept_when_the_attention_weights_are_used():
    torch.manual_seed(0)
    graph = fmprune.trace(AttentionWeightsUsed(), torch.randn(1, 3, 8, 8))
    assert "blocks.0.attn" not in graph.sizes()
    assert any("attention weights" in n for n in graph.notes)


class TokenCatOfData(nn.Module):
    """A cat along the tokens of two conv branches made tokens (N, H·W, C): their channels are
    the same maps, position by position."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 3, padding=1)
        self.ln, self.fc = nn.LayerNorm(6), nn.Linear(6, 2)

    def forward(self, x):
        tokens = [y.flatten(2).transpose(1, 2) for y in (self.a(x), F.relu(self.b(x)))]
        return self.fc(self.ln(torch.cat(tokens, dim=1)).transpose(1, 2).mean(2))


def test_a_token_cat_unites_the_channels_of_its_operands():
    torch.manual_seed(0)
    model, x = TokenCatOfData(), torch.randn(3, 3, 4, 4)
    assert fmprune.trace(model, x[:1]).sizes() == {"a": 6}
    assert prune_against_reference(model, x, rounds=3) < 1e-12


@pytest.mark.slow   # about a minute: vit_b_16 in float64 at 224 x 224
@pytest.mark.skipif(not torchvision_installed(), reason="torchvision not installed")
def test_torchvision_vit_prunes_heads_and_mlp_exactly():
    """vit_b_16 at its input size, random weights: 12 heads and 3072 MLP units per block (its
    code writes the width 768 into a reshape: the embedding is kept whatever the adapter says)."""
    from fmprune.models.spec import ModelSpec, build_model
    torch.manual_seed(0)
    model = build_model(ModelSpec("torchvision:vit_b_16", num_classes=10, input_shape=(3, 224, 224)))
    x = torch.randn(1, 3, 224, 224)
    graph = fmprune.trace(model, x)
    sizes = graph.sizes()
    assert len(sizes) == 24 and sizes["encoder.layers.encoder_layer_0.self_attention"] == 12
    assert sizes["encoder.layers.encoder_layer_11.mlp.0"] == 3072
    assert prune_against_reference(model, x, rounds=1, fraction=0.25) < 1e-8


@pytest.mark.skipif(not torchvision_installed(), reason="torchvision not installed")
def test_torchvision_swin_prunes_its_mlp_units_exactly():
    """swin_t: its shifted-window attention and patch merging (fx-wrapped functions inside) are
    kept whole, with the residual stream they read and write; the MLP units between prune."""
    from fmprune.models.spec import ModelSpec, build_model
    torch.manual_seed(0)
    model = build_model(ModelSpec("torchvision:swin_t", num_classes=10, input_shape=(3, 64, 64)))
    x = torch.randn(2, 3, 64, 64)
    graph = fmprune.trace(model, x[:1])
    assert graph.sizes()["features.1.0.mlp.0"] == 384 and graph.sizes()["features.7.1.mlp.0"] == 3072
    assert len(graph.sizes()) == 12
    assert any("ShiftedWindowAttention 'features.1.0.attn' is kept whole" in n for n in graph.notes)
    assert prune_against_reference(model, x, rounds=1, fraction=0.25) < 1e-8
