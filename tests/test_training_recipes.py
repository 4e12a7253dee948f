"""Training recipes: LeNet's unchanged, the SGD recipe for everything else, and `fmprune train`."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch

from fmprune.data import Splits, adapt
from fmprune.errors import DataError, FmpruneError
from fmprune.models import LeNet, ModelSpec
from fmprune.training import (SGDConfig, TrainConfig, cosine_schedule, default_recipe, evaluate, recipe_from_dict,
                              train, train_model)

from support.user_model import USER_MODEL


def small(splits: Splits, n: int) -> Splits:
    return dataclasses.replace(splits, train=splits.train.subset(n))


@pytest.fixture(scope="module")
def rgb_splits(splits) -> Splits:
    return adapt(splits, "rgb32")


def test_lenet_recipe_is_todays():
    assert default_recipe("lenet") == TrainConfig() == TrainConfig(epochs=4, batch_size=100, lr=2e-3,
                                                                   weight_decay=0.0, seed=0)
    assert TrainConfig().to_dict() == {"epochs": 4, "batch_size": 100, "lr": 2e-3, "weight_decay": 0.0, "seed": 0}
    assert default_recipe("lenet", epochs=2, lr=None) == TrainConfig(epochs=2)
    with pytest.raises(FmpruneError, match="LeNet's recipe .* has no option 'augment'"):
        default_recipe("lenet", augment=("crop",))


def test_train_model_gives_lenet_exactly_the_weights_of_the_old_path(splits):
    data = small(splits, 200)
    config = TrainConfig(epochs=1, batch_size=50, seed=4)
    torch.manual_seed(config.seed)
    old = LeNet(num_classes=10, in_channels=1, widths=(4, 6, 16))
    train(old, data.train, config)
    new = train_model(ModelSpec("lenet", {"widths": (4, 6, 16)}, 10, (1, 28, 28)), data, config)
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.model.state_dict().values()))
    assert new.spec.normalize is None and new.accuracies["val"] == evaluate(old, data.val)
    assert set(new.recipe) == {"epochs", "batch_size", "lr", "weight_decay", "seed", "train_seconds"}


def test_sgd_recipe_defaults_and_round_trip():
    r = default_recipe("resnet20")
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.nesterov, r.weight_decay) == (200, 128, 0.1, 0.9, True, 5e-4)
    assert default_recipe("torchvision:resnet18") == r and default_recipe("fc").epochs == 20
    for recipe in (SGDConfig(augment=("crop",), max_iters=7), TrainConfig(epochs=2), SGDConfig()):
        assert recipe_from_dict({**recipe.to_dict(), "train_seconds": 1.0}) == recipe
    assert recipe_from_dict({"epochs": 3, "batch_size": 10, "lr": 0.1, "weight_decay": 0.0, "seed": 0}) == \
        TrainConfig(epochs=3, batch_size=10, lr=0.1)
    with pytest.raises(DataError, match="unknown augmentation 'rotate'"):
        SGDConfig(augment=("rotate",))
    assert SGDConfig(epochs=3, batch_size=10).iterations(95) == 27
    assert SGDConfig(epochs=3, batch_size=10, max_iters=5).iterations(95) == 5


def test_cosine_schedule_anneals_over_exactly_the_run():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedule = cosine_schedule(opt, 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.05)
    assert lrs[9] == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.9)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)


def test_sgd_training_is_deterministic_and_records_its_normalisation(rgb_splits):
    data = small(rgb_splits, 256)
    spec = ModelSpec("resnet20", {"widths": (4, 8, 8)}, 10, (3, 32, 32))
    recipe = SGDConfig(batch_size=32, max_iters=5, seed=1, augment=("crop", "flip"))
    a, b = train_model(spec, data, recipe), train_model(spec, data, recipe)
    c = train_model(spec, data, dataclasses.replace(recipe, seed=2))
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), c.model.state_dict().values()))
    mean, std = data.channel_stats()
    assert a.spec.normalize == {"mean": mean, "std": std} and a.recipe["normalization"] == {"mean": mean, "std": std}
    assert a.recipe["optimizer"] == "sgd" and a.recipe["augment"] == ["crop", "flip"] and a.recipe["max_iters"] == 5
    assert torch.equal(a.model.normalize.mean.flatten(), torch.tensor(mean, dtype=torch.float32))
    plain = train_model(spec, data, dataclasses.replace(recipe, normalize=False, augment=None))
    assert plain.spec.normalize is None and plain.recipe["augment"] == []   # digits: no augmentation by default


def test_sgd_training_reports_steps_over_the_whole_run(rgb_splits):
    """on_step counts 1..total across epochs (a progress bar's total, a log's step), not per epoch."""
    data = small(rgb_splits, 64)
    spec = ModelSpec("resnet20", {"widths": (4, 8, 8)}, 10, (3, 32, 32))
    seen: list[tuple[int, int]] = []
    train_model(spec, data, SGDConfig(batch_size=32, max_iters=5, seed=1), on_step=lambda s, t, _: seen.append((s, t)))
    assert seen == [(i, 5) for i in range(1, 6)]          # 2 updates an epoch over 3 epochs, cut at 5


def test_sgd_recipe_learns(splits):
    data = small(splits, 1000)
    spec = ModelSpec("fc", {"hidden": (64,)}, 10, (1, 28, 28))
    trained = train_model(spec, data, default_recipe("fc", epochs=3, batch_size=50, lr=0.1))
    assert trained.accuracies["val"] > 0.6   # chance is 0.1


# ---------------------------------------------------------------------------- command line
def fmprune(*args):
    return subprocess.run([sys.executable, "-m", "fmprune", *map(str, args)], capture_output=True, text=True)


def test_train_command_trains_a_user_file_model_on_mnist_3x32(tmp_path, idx_dir):
    from fmprune.run.checkpoint import load_checkpoint
    from fmprune.data import load_splits

    user = tmp_path / "mymodel.py"
    user.write_text(USER_MODEL)
    out = tmp_path / "user.pt"
    data = f"mnist3x32:{idx_dir}"
    proc = fmprune("train", "--model", f"{user}:build", "--model-arg", "width=3", "--data-dir", data,
                   "--max-iters", 3, "--batch-size", 20, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "validation accuracy" in proc.stdout and proc.stderr == ""
    ckpt = load_checkpoint(out)
    spec = ModelSpec.from_dict(ckpt.model_spec)
    assert spec.name == f"{user}:build" and spec.kwargs == {"width": 3} and spec.input_shape == (3, 32, 32)
    assert ckpt.recipe["max_iters"] == 3 and ckpt.recipe["data"] == "mnist3x32" and spec.normalize is not None
    splits = load_splits(data)
    assert ckpt.data_fingerprint == splits.fingerprint()
    assert evaluate(ckpt.build(), splits.val) == pytest.approx(ckpt.accuracies["val"])
