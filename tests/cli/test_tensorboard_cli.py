"""`fmprune train --tensorboard DIR`: the training loss per iteration as TensorBoard scalars, and
one line before any work when the tensorboard package is missing."""

import sys

import pytest

from support.tensorboard_events import read_scalars


def run_cli(args, monkeypatch):
    from fmprune.cli import main
    monkeypatch.setattr(sys, "argv", ["fmprune", *map(str, args)])
    try:
        main()
    except SystemExit as e:
        return e.code
    return 0


def test_train_writes_its_loss_per_iteration(idx_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    code = run_cli(["train", "--data-dir", idx_dir, "--max-iters", 4, "--batch-size", 100, "--quiet",
                    "--out", tmp_path / "m.pt", "--tensorboard", tmp_path / "tb"], monkeypatch)
    assert code == 0 and (tmp_path / "m.pt").is_file()
    losses = read_scalars(tmp_path / "tb")["train/loss"]
    assert [step for step, _ in losses] == [1, 2, 3, 4]
    assert losses[-1][1] < losses[0][1]


def test_train_without_tensorboard_fails_before_training(idx_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    code = run_cli(["train", "--data-dir", idx_dir, "--epochs", 1, "--out", tmp_path / "m.pt",
                    "--tensorboard", tmp_path / "tb"], monkeypatch)
    assert code == 2 and not (tmp_path / "m.pt").exists()
    assert capsys.readouterr().err.strip() == (
        "fmprune: error: TensorBoard output needs the tensorboard package: pip install 'fmprune[tensorboard]'")


SWEEP = """
[experiment]
name = "tb"
[settings]
steps = 3
calibration = 100
[axes]
scope = ["conv1", "fc1"]
"""


def test_sweep_writes_one_event_directory_per_pruning_run(small_ckpt, idx_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from fmprune.study.report import read_curve
    (tmp_path / "e.toml").write_text(SWEEP)
    code = run_cli(["sweep", tmp_path / "e.toml", "--out-dir", tmp_path / "out", "--workers", 1,
                    "--checkpoint", small_ckpt, "--data-dir", idx_dir, "--tensorboard", tmp_path / "tb"], monkeypatch)
    assert code == 0
    for label in ("conv1", "fc1"):
        scalars = read_scalars(tmp_path / "tb" / "tb" / label)
        curve = read_curve(tmp_path / "out" / "tb" / label)
        assert [s for s, _ in scalars["prune/accuracy"]] == [0, 1, 2, 3]
        assert [v for _, v in scalars["prune/params"]] == list(curve.params)
        assert [v for _, v in scalars["prune/accuracy"]] == pytest.approx(list(curve.accuracy))


def test_sweep_tensorboard_refuses_an_experiment_that_does_not_prune_maps(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    (tmp_path / "e.toml").write_text('[experiment]\nname = "w"\nkind = "sparsify"\n[axes]\namount = [0.5]\n')
    code = run_cli(["sweep", tmp_path / "e.toml", "--out-dir", tmp_path / "out", "--tensorboard", tmp_path / "tb"],
                   monkeypatch)
    assert code != 0 and not (tmp_path / "tb").exists()
    assert "--tensorboard logs pruning runs" in capsys.readouterr().err
