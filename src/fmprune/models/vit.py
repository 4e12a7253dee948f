"""A small Vision Transformer for 28 x 28 digits and clothes (MNIST, Fashion-MNIST).

Built from ``nn.MultiheadAttention`` so that fmprune prunes it as it prunes torchvision's ViT:
each block's attention heads are one group, its MLP hidden units another; the embedding (the
residual stream through every block) is kept by default (see docs/transformers.md).
"""

from __future__ import annotations

import torch
from torch import nn


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with a GELU."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class VisionTransformer(nn.Module):
    """Patches by a strided conv, a class token, a learned positional embedding, ``depth``
    encoder blocks, a final LayerNorm and a Linear head on the class token."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int | tuple[int, int] = (28, 28),
                 patch: int = 7, dim: int = 64, depth: int = 4, heads: int = 4, hidden: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        h, w = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
        if h % patch or w % patch:
            raise ValueError(f"the input {h}x{w} is not a whole number of {patch}x{patch} patches")
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, (h // patch) * (w // patch) + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, hidden, dropout) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)                          # (N, tokens, dim)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.pos_embedding)
        return self.head(self.ln(x)[:, 0])


def vit_tiny(num_classes: int = 10, in_channels: int = 1, input_size: int | tuple[int, int] = (28, 28),
             **kwargs) -> VisionTransformer:
    """Patch 7 (16 tokens and a class token on 28 x 28), width 64, 4 blocks of 4 heads, MLP 128."""
    return VisionTransformer(num_classes, in_channels, input_size, **kwargs)
