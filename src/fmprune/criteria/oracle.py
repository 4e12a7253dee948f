"""The oracle of Molchanov et al. 2017: the true change of loss when a map is removed alone."""

from __future__ import annotations

import torch

from .base import READS_ALL, Criterion, LayerContext

PAPER = "Molchanov et al. 2017, Pruning Convolutional Neural Networks for Resource Efficient Inference (ICLR)"


class OracleCriterion(Criterion):
    """Change of the calibration loss when the map alone is removed (masked); lowest first."""

    name = "oracle"
    display_name = "Oracle"
    paper = PAPER
    reads = READS_ALL | {"masked_loss"}
    note = ("cost per step: every map in scope is removed alone and everything after its consumers re-run "
            "on the calibration images, the copies batched (about 8 forward passes of LeNet per image for "
            "its 1,120 maps; 44 s per step with 1,000 images on a shared 2-core CPU)")

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return ctx.probe("loss_change")


class OracleAbsCriterion(OracleCriterion):
    """|change of the calibration loss| when the map alone is removed, as the paper ranks (oracle-abs)."""

    name = "oracle_abs"
    display_name = "Oracle (abs)"

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return super().score_layer(ctx).abs()
