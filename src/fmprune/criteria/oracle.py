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
    note = ("exact but costly: per step, every map in scope is masked alone and everything downstream "
            "of its group re-run on the calibration set (the prefix is computed once per chunk and the "
            "masked copies run batched); LeNet/MNIST whole network, 1,000 images: ~{cost} per step")

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return ctx.probe("loss_change")


class OracleAbsCriterion(OracleCriterion):
    """|change of the calibration loss| when the map alone is removed, as the paper ranks (oracle-abs)."""

    name = "oracle_abs"
    display_name = "Oracle (abs)"

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return super().score_layer(ctx).abs()
