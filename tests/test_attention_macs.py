"""count_macs (hooks, any model) of nn.MultiheadAttention against a hand computation: the q, k, v
projections, the scores QK^T, the weighted values AV and out_proj, per example; lowered when
heads are pruned, out_proj (a module inside the attention) not counted twice; equal to the
traced graph's total on a small ViT."""

from __future__ import annotations

import torch
from torch import nn

import fmprune
from fmprune.costs import count_macs
from fmprune.models import create_model


class Attend(nn.Module):
    """``x`` and ``memory`` (``x`` itself: self-attention), (N, 8, tokens) as a conv would give
    them, to tokens and through one Linear (8 -> 8), then one attention of ``x`` to ``memory``,
    called by keywords."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 4, batch_first=True)   # 4 heads of 2

    def forward(self, x, memory):
        q, kv = self.embed(x.transpose(1, 2)), self.embed(memory.transpose(1, 2))
        return self.attn(query=q, key=kv, value=kv, need_weights=False)[0]


def hand_macs(queries: int, keys: int, embed: int = 8, inner: int = 8, linear: bool = True) -> int:
    """Per example: the Linear on queries and keys; then q from the queries, k and v from the
    keys (embed -> inner each), the scores and the weighted values (queries x keys x inner
    each), out_proj (inner -> embed)."""
    macs = (queries + keys) * embed * embed if linear else 0
    projections = queries * embed * inner + 2 * keys * embed * inner
    return macs + projections + 2 * queries * keys * inner + queries * inner * embed


def test_self_attention_macs_by_hand():
    x = torch.randn(2, 8, 5)   # batch 2, 5 tokens
    assert hand_macs(5, 5) == 640 + 960 + 200 + 200 + 320
    assert count_macs(Attend(), (x, x)) == hand_macs(5, 5)


def test_sequence_first_attention_reads_the_tokens_on_axis_0():
    attn = nn.MultiheadAttention(8, 4)   # (L, N, E)
    x = torch.randn(5, 3, 8)
    assert count_macs(attn, (x, x, x)) == hand_macs(5, 5, linear=False) == 1680


def test_cross_attention_reads_the_key_length():
    assert count_macs(Attend(), (torch.randn(2, 8, 5), torch.randn(2, 8, 3))) == hand_macs(5, 3) == 512 + 1264


def test_pruned_heads_lower_the_count_and_out_proj_is_not_counted_twice():
    """After removal the module's own forward calls ``self.out_proj``: still counted once."""
    model, x = Attend().eval(), torch.randn(2, 8, 5)
    graph = fmprune.trace(model, (x[:1], x[:1]))
    assert graph.sizes() == {"attn": 4}
    graph.remove("attn", [0, 3])   # 2 heads of 2 left: inner width 4
    assert count_macs(model, (x, x)) == hand_macs(5, 5, inner=4) == 640 + 840
    assert count_macs(model, (x, x)) == graph.total_macs()


def test_the_hooks_count_what_the_graph_counts_on_a_vit():
    torch.manual_seed(0)
    model, x = create_model("vit_tiny").eval(), torch.randn(1, 1, 28, 28)
    graph = fmprune.trace(model, x)
    assert count_macs(model, x) == graph.total_macs()
    graph.remove("blocks.1.attn", [1])
    graph.remove("blocks.2.mlp.0", list(range(0, 128, 2)))
    assert count_macs(model, x) == graph.total_macs()
