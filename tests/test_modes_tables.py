"""The one eval switch (fmprune.modes), the one markdown table (fmprune.tables) and the one
calibration draw (fmprune.data.calibration_subset)."""

import pytest
import torch
from torch import nn

from fmprune.data import (CALIBRATION_STREAM, QUANTIZATION_STREAM, RANK_QUALITY_STREAM, Split,
                          calibration_subset)
from fmprune.errors import FmpruneError
from fmprune.modes import eval_mode
from fmprune.tables import markdown_table


def test_eval_mode_restores_each_modules_own_flag_even_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    model[1].eval()                                  # a frozen norm inside a training model
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model):
            assert not any(m.training for m in model.modules())
            raise RuntimeError("inside")
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_markdown_table_aligns_names_left_and_numbers_right():
    rows = [{"model": "lenet", "criterion": "taylor", "accuracy": "0.99"}]
    assert markdown_table(rows) == ("| model | criterion | accuracy |\n|---|---:|---:|\n"
                                    "| lenet | taylor | 0.99 |")
    assert markdown_table(rows, text_columns=2).splitlines()[1] == "|---|---|---:|"


def test_calibration_draws_are_seeded_distinct_per_purpose_and_bounded():
    train = Split(torch.rand(40, 1, 2, 2), torch.arange(40))
    first = calibration_subset(train, 10, seed=1)
    assert torch.equal(first.labels, calibration_subset(train, 10, seed=1).labels)
    assert torch.equal(first.images, train.images[first.labels])       # image and label stay paired
    expected = torch.randperm(40, generator=torch.Generator().manual_seed(1 + CALIBRATION_STREAM))[:10]
    assert torch.equal(first.labels, expected)
    draws = {tuple(calibration_subset(train, 10, 1, stream).labels.tolist())
             for stream in (CALIBRATION_STREAM, QUANTIZATION_STREAM, RANK_QUALITY_STREAM)}
    assert len(draws) == 3
    with pytest.raises(FmpruneError, match="give --calibration 40 or fewer"):
        calibration_subset(train, 41, 0)
