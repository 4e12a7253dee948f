"""`fmprune sparsify`, `export --sparse` and `count` on a sparse model: in process with click's
runner (fast), and one error through the real entry point (``python -m fmprune``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from fmprune.cli import cli
from fmprune.errors import FmpruneError

from fmprune.run.checkpoint import load_checkpoint
from fmprune.unstructured import load_sparse, weight_density

from support.sparse_models import SMALL_FC, trained_checkpoint


def fmprune(*args) -> str:
    """Run a command in process; its output, or the exception it raised."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None:
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def fc_ckpt(splits, tmp_path_factory):
    return trained_checkpoint(SMALL_FC, splits, tmp_path_factory.mktemp("fc") / "fc.pt")


@pytest.fixture(scope="module")
def sparse_run(fc_ckpt, idx_dir, tmp_path_factory):
    """90 % global magnitude pruning of the small fc model, two rounds with SGD retraining."""
    run = tmp_path_factory.mktemp("sparse") / "run"
    out = fmprune("sparsify", "--checkpoint", fc_ckpt, "--data-dir", idx_dir, "--method", "magnitude",
                  "--scope", "global", "--amount", 0.9, "--retrain", 5, "--rounds", 2, "--optimizer", "sgd",
                  "--retrain-lr", 1e-3, "--run-dir", run)
    return run, out


def test_sparsify_prints_accuracy_and_non_zero_weights_and_writes_the_run(sparse_run):
    run, out = sparse_run
    weights = 784 * 40 + 40 * 30 + 30 * 20 + 20 * 10
    left = weights - round(0.9 * weights)
    assert "round 1/2: 45.00% pruned" in out and "round 2/2: 90.00% pruned" in out
    assert "val accuracy" in out and "->" in out
    assert f"non-zero weights {weights:,} -> {left:,} of {weights:,}" in out
    assert {p.name for p in run.iterdir()} >= {"model.pt", "config.json", "summary.json", "run.log"}
    assert json.loads((run / "config.json").read_text())["kind"] == "sparsify"
    model = load_checkpoint(run / "model.pt").build()
    assert sum(r.nonzero for r in weight_density(model)) == left


def test_count_shows_non_zero_weights_and_density_of_a_sparse_model(sparse_run):
    run, _ = sparse_run
    out = fmprune("count", "--checkpoint", run / "model.pt")
    assert "non-zero" in out and "density" in out and "10.00%" in out


def test_unit_pruning_removes_units_through_the_cli(fc_ckpt, idx_dir, tmp_path):
    out = fmprune("sparsify", "--checkpoint", fc_ckpt, "--data-dir", idx_dir, "--method", "unit",
                  "--amount", 0.5, "--run-dir", tmp_path / "u")
    assert "units left {'fc1': 20, 'fc2': 15, 'fc3': 10}" in out
    assert f"params {784 * 40 + 40 * 30 + 30 * 20 + 20 * 10:,} -> {784 * 20 + 20 * 15 + 15 * 10 + 10 * 10:,}" in out


def test_export_sparse_is_smaller_and_loads_back(sparse_run, tmp_path):
    run, _ = sparse_run
    out = fmprune("export", run, "--out-dir", tmp_path / "exp", "--sparse", "--no-onnx")
    assert "model.sparse.pt" in out and "fc1.weight" in out and "max |diff| 0.00e+00" in out
    stored, dense = (tmp_path / "exp" / "model.sparse.pt").stat().st_size, (run / "model.pt").stat().st_size
    assert stored < 0.35 * dense
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(load_sparse(tmp_path / "exp" / "model.sparse.pt").build()(x),
                       load_checkpoint(run / "model.pt").build()(x))


@pytest.mark.parametrize("args,fragment", [
    (["--amount", 0.5, "--layers", "fc1,fc9"], "unknown layer 'fc9'"),
    (["--amount", 0.98, "--method", "unit"], "would remove all 20 units of layer 'fc3'"),
    (["--amount", 0.5, "--method", "unit", "--layers", "fc4"], "'fc4' is not prunable"),
    (["--amount", 0.5, "--rounds", 3], "--retrain"),
])
def test_bad_input_names_the_problem_and_writes_nothing(fc_ckpt, idx_dir, tmp_path, args, fragment):
    run = tmp_path / "run"
    with pytest.raises(FmpruneError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        fmprune("sparsify", "--checkpoint", fc_ckpt, "--data-dir", idx_dir, "--run-dir", run, *args)
    assert not run.exists()


def test_an_amount_of_one_is_one_line_from_the_real_entry_point(fc_ckpt, idx_dir, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "fmprune", "sparsify", "--checkpoint", str(fc_ckpt),
                           "--data-dir", str(idx_dir), "--amount", "1", "--run-dir", str(run)],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("fmprune: error: Invalid value for '--amount': amount must be a fraction in "
                                   "[0, 1), got 1.0 (see 'python -m fmprune sparsify --help')")
    assert not run.exists()


@pytest.mark.slow
def test_sweep_runs_sparsify_experiments_resumably(fc_ckpt, idx_dir, tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text('[experiment]\nname = "tiny"\nkind = "sparsify"\ntitle = "tiny fc"\n\n'
                    '[axes]\nmethod = ["magnitude", "unit"]\namount = [0.0, 0.9]\n')
    args = ["sweep", toml, "--checkpoint", fc_ckpt, "--data-dir", idx_dir, "--out-dir", tmp_path / "runs",
            "--workers", 1]
    assert "4 of 4 runs finished" in fmprune(*args)
    assert {p.name for p in (tmp_path / "runs" / "tiny").iterdir()} >= {"magnitude+k0.9", "unit+k0.9"}
    assert "skipped" in fmprune(*args)     # finished runs are not run again


def test_report_plots_accuracy_against_k_with_a_table(fc_ckpt, splits, tmp_path):
    from fmprune.unstructured import SparsifyConfig, run_sparsify
    for method, seed in (("magnitude", 0), ("random", 0), ("random", 1), ("unit", 0)):
        for amount in (0.0, 0.5, 0.9):
            run_sparsify(fc_ckpt, splits, SparsifyConfig(method=method, amount=amount, eval_size=100, seed=seed),
                         tmp_path / "runs" / f"{method}+k{amount}+seed{seed}")
    fmprune("report", tmp_path / "runs", "--out-dir", tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Weight vs unit pruning: fc" in text and "accuracy-vs-k.png" in text
    assert "| k | weight, magnitude, layer | weight, random, layer | unit, layer |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 90% |"))
    assert row.count("(10.0%)") == 2 and row.count("|") == 5      # weight pruning leaves 10 % of the weights
    assert row.count(", 2 seeds] (10.0%)") == 1                    # the random baseline: mean over its seeds
    assert "*weight, magnitude, layer* stays within 1 pp of the base" in text
    assert any(p.name.endswith("accuracy-vs-k.png") for p in (tmp_path / "report" / "figures").iterdir())
