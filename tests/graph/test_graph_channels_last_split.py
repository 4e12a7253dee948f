"""A chunk along channels a permute moved to the last axis (MaxViT's ``q, k, v =
torch.chunk(self.to_qkv(x), 3, dim=-1)``): each piece gets its slice of the labels, the split
maps are kept (their sizes are constants of the code), the rest of the model prunes exactly; a
chunk along another axis of a channels-last tensor passes all channels to every piece."""

from __future__ import annotations

import torch
from torch import nn

import fmprune
from support.reference import prune_against_reference


class ChannelsLastQKV(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.qkv = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 18)
        self.out, self.fc = nn.Linear(6, 5), nn.Linear(5, 2)

    def forward(self, x):
        y = self.stem(x).permute(0, 2, 3, 1)             # (N, H, W, 6)
        q, k, v = torch.chunk(self.qkv(y), 3, dim=-1)     # three (N, H, W, 6)
        top, bottom = (q * k + v).chunk(2, 1)              # along H: every channel in both
        return self.fc(self.out(top + bottom).permute(0, 3, 1, 2).mean((2, 3)))


def test_a_channels_last_chunk_keeps_its_maps_and_the_rest_prunes_exactly():
    torch.manual_seed(0)
    model, x = ChannelsLastQKV(), torch.randn(3, 3, 4, 4)
    graph = fmprune.trace(model, x[:1])
    assert graph.sizes() == {"stem": 6, "out": 5}
    assert any("splits channels at fixed sizes" in n for n in graph.notes)
    assert prune_against_reference(model, x, rounds=3) < 1e-12
