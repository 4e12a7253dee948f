"""Which base model a command starts from (``fmprune.run.base_model``): cached paths named by
model, data and seed, apart for non-default trainings; a missing cached model is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmprune.errors import FmpruneError
from fmprune.models.request import ModelRequest
from fmprune.run.base_model import (cached_checkpoint, default_checkpoint_path, resolve_checkpoint,
                                    trained_checkpoint_path)


def test_trained_checkpoints_are_named_apart_from_the_default_one(splits):
    spec = ModelRequest("lenet").spec(splits.input_shape, splits.n_classes)
    default = default_checkpoint_path(splits, 0, spec)
    assert default.name == f"lenet-{splits.fingerprint()}-seed0.pt"
    assert default_checkpoint_path(splits, 3, spec).name.endswith("-seed3.pt")
    assert trained_checkpoint_path(splits, 0, spec) == default
    stem = default.stem
    assert trained_checkpoint_path(splits, 0, spec, bn_l1=1e-4).name == f"{stem}-bnl1-0.0001.pt"
    assert trained_checkpoint_path(splits, 0, spec, weights=Path("w/imagenet.pt")).name == f"{stem}-from-imagenet.pt"
    assert trained_checkpoint_path(splits, 0, spec, freeze_features=True).name == f"{stem}-head-only.pt"
    assert trained_checkpoint_path(splits, 0, spec, 1e-5, Path("w.pt"), True).name == \
        f"{stem}-bnl1-1e-05-from-w-head-only.pt"


def test_a_given_checkpoint_wins_and_a_missing_cached_one_is_one_line(splits, tmp_path):
    given = tmp_path / "mine.pt"
    assert resolve_checkpoint(given, splits) == given
    explicit = ModelRequest("fc", explicit=True)
    with pytest.raises(FmpruneError, match="give either --checkpoint .* or --model, not both"):
        resolve_checkpoint(given, splits, explicit)
    with pytest.raises(FmpruneError, match=r"no cached fc checkpoint for these data .*`fmprune train --model fc` first"):
        cached_checkpoint("fc", splits)
