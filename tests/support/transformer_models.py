"""A small vision transformer: a class token expanded over the batch and concatenated along the
token axis, a positional embedding added, nn.MultiheadAttention, MLPs over the last axis,
LayerNorms over the embedding, the class token read with ``x[:, 0]``."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """Pre-norm encoder block: LayerNorm, self-attention, residual; LayerNorm, MLP, residual."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, dim))

    def forward(self, x):
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class SmallViT(nn.Module):
    """Patch conv, class token (expand + cat along the tokens), positional embedding, two
    blocks, a final LayerNorm, the class token into a Linear head."""

    def __init__(self, dim: int = 8, heads: int = 4, hidden: int = 12, patch: int = 4, image: int = 8) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(2)])
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)                      # (N, tokens, dim)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.pos_embedding)
        return self.head(self.ln(x)[:, 0])


class AttentionWeightsUsed(SmallViT):
    """The averaged attention weights feed the head: every head changes them, all are kept."""

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        out, weights = self.blocks[0].attn(x, x, x)
        return self.head(self.ln(out)[:, 0]) + weights.sum((1, 2))[:, None]
