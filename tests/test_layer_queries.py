"""What code outside layers.py asks of the layers: which parameter axis holds the output maps
(obd's per-map sums) and which modules carry a BatchNorm scale (slimming, --bn-l1)."""

import torch
from torch import nn

from fmprune.criteria.obd import per_map_sum
from fmprune.layers import adapter_for, batch_norm_scale


def test_output_axis_is_the_weights_map_axis_of_each_layer():
    conv, up, linear = nn.Conv2d(3, 5, 3), nn.ConvTranspose2d(3, 5, 3), nn.Linear(4, 6)
    assert [adapter_for(m).output_axis(m, "weight") for m in (conv, up, linear)] == [0, 1, 0]
    assert adapter_for(up).output_axis(up, "bias") == 0


def test_obd_sums_a_transposed_convs_weight_over_its_output_maps():
    up = nn.ConvTranspose2d(3, 5, 2)                     # weight (in=3, out=5, 2, 2)
    values = torch.arange(up.weight.numel(), dtype=torch.float64).view_as(up.weight)
    expected = torch.stack([values[:, j].sum() for j in range(5)])
    assert torch.equal(per_map_sum(up, "weight", values, 5, "up"), expected)
    conv = nn.Conv2d(3, 5, 2)
    values = torch.ones_like(conv.weight, dtype=torch.float64)
    assert torch.equal(per_map_sum(conv, "weight", values, 5, "conv"), torch.full((5,), 12.0, dtype=torch.float64))


def test_only_batchnorms_with_a_scale_have_one():
    assert batch_norm_scale(nn.BatchNorm2d(4)) is not None
    assert batch_norm_scale(nn.BatchNorm1d(4, affine=False)) is None
    assert batch_norm_scale(nn.InstanceNorm2d(4, affine=True)) is None   # shares BatchNorm's adapter, not its γ
    assert batch_norm_scale(nn.Conv2d(1, 1, 1)) is None
