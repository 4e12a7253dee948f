"""The zoo's vit_tiny: its heads and MLP units are the groups (the embedding kept), and random
removals in every group give exactly the reference model (removed MLP units zeroed, removed
heads' v rows and out_proj columns zeroed)."""

from __future__ import annotations

import torch

import fmprune
from fmprune.models import create_model
from support.reference import prune_against_reference


def test_vit_tiny_prunes_heads_and_mlp_units_exactly():
    torch.manual_seed(0)
    model, x = create_model("vit_tiny").eval(), torch.randn(2, 1, 28, 28)
    graph = fmprune.trace(model, x[:1])
    assert graph.sizes() == {f"blocks.{i}.{g}": n for i in range(4) for g, n in (("attn", 4), ("mlp.0", 128))}
    assert prune_against_reference(model, x, rounds=2) < 1e-10
