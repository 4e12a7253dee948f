"""`--data FILE.py:factory`: the user's own datasets reach every command through the one data
loader (train, prune, count of a pruned checkpoint), with one-line errors for bad factories."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from fmprune.cli import cli
from fmprune.data import load_splits
from fmprune.errors import FmpruneError

USER_FILE = textwrap.dedent('''
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    def _data(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 3, (n,), generator=g)
        x = 0.1 * torch.rand(n, 1, 12, 12, generator=g)
        for i, c in enumerate(y.tolist()):
            x[i, 0, 4 * c:4 * c + 4, :] += 0.8
        return TensorDataset(x, y)

    def data():                      # datasets: train, val (test = val)
        return _data(300, 1), _data(60, 2)

    def loaders():                   # loaders: train, val, test
        return (DataLoader(_data(300, 1), batch_size=32), DataLoader(_data(60, 2), batch_size=7),
                DataLoader(_data(50, 3), batch_size=50))

    def broken():
        return 42

    def build(num_classes=3, in_channels=1, input_shape=None):
        return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                             nn.Flatten(), nn.Linear(32, num_classes))
''')


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(USER_FILE)
    return path


def test_datasets_and_loaders_become_splits(user_file):
    a = load_splits(f"{user_file}:data")
    assert (len(a.train), len(a.val), len(a.test)) == (300, 60, 60) and a.input_shape == (1, 12, 12)
    assert "test = val" in a.source and a.n_classes == 3
    b = load_splits(f"{user_file}:loaders")
    assert (len(b.train), len(b.val), len(b.test)) == (300, 60, 50)
    assert b.train.images.shape == (300, 1, 12, 12) and b.train.labels.dtype.is_floating_point is False


@pytest.mark.parametrize("factory, message", [
    ("broken", "must return (train, val) or (train, val, test)"),
    ("nothing", "has no factory 'nothing'"),
])
def test_bad_factories_are_one_line(user_file, factory, message):
    with pytest.raises(FmpruneError) as error:
        load_splits(f"{user_file}:{factory}")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_train_then_prune_on_the_users_data_and_model(user_file, tmp_path):
    runner = CliRunner()
    ckpt = tmp_path / "base.pt"
    done = runner.invoke(cli, ["train", "--model", f"{user_file}:build", "--data", f"{user_file}:data",
                               "--max-iters", "30", "--num-classes", "3", "--out", str(ckpt)])
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["prune", "--checkpoint", str(ckpt), "--data", f"{user_file}:loaders",
                               "--steps", "3", "--calibration", "100", "--run-dir", str(tmp_path / "run"),
                               "--quiet"])
    # the loaders' test split differs from the datasets' (test = val): other data, refused
    assert "trained on other data" in str(done.exception)
    done = runner.invoke(cli, ["prune", "--checkpoint", str(ckpt), "--data", f"{user_file}:data",
                               "--steps", "3", "--calibration", "100", "--run-dir", str(tmp_path / "run"),
                               "--quiet"])
    assert done.exit_code == 0, done.output
    assert "3 steps" in done.output
