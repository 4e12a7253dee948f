"""Deployable exports and the final comparison table."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from fmprune.run.checkpoint import load_checkpoint
from fmprune.study.compare import Comparison, ModelRow, compare_models, reinitialize, train_from_scratch, recipe_of
from fmprune.study.export import export_model
from fmprune.costs import count_params
from fmprune.run.loop import PruneConfig, run_pruning

LOAD_WITHOUT_FMPRUNE = """
import sys
sys.modules["fmprune"] = None          # any import of fmprune would now fail
import numpy as np, torch, onnxruntime
x = np.load(sys.argv[2])
program = torch.export.load(sys.argv[1] + "/model.pt2").module()
session = onnxruntime.InferenceSession(sys.argv[1] + "/model.onnx")
np.save(sys.argv[3], program(torch.from_numpy(x)).detach().numpy())
np.save(sys.argv[4], session.run(None, {"images": x})[0])
"""


@pytest.fixture(scope="module")
def pruned_run(small_ckpt, splits, tmp_path_factory):
    run = tmp_path_factory.mktemp("pruned")
    run_pruning(small_ckpt, splits, PruneConfig(criterion="taylor", steps=12), run)
    return run


def test_exported_model_loads_without_fmprune_and_matches(pruned_run, splits, tmp_path):
    ckpt = load_checkpoint(pruned_run / "model.pt")
    result = export_model(ckpt, tmp_path / "exp")
    assert result.max_diff_program <= 1e-5 and result.max_diff_onnx <= 1e-4
    x = splits.test.images[:57].numpy()
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", LOAD_WITHOUT_FMPRUNE, tmp_path / "exp", tmp_path / "x.npy",
                    tmp_path / "a.npy", tmp_path / "b.npy"], check=True, capture_output=True)
    model = ckpt.build()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(np.load(tmp_path / "a.npy") - expected).max() <= 1e-5
    assert np.abs(np.load(tmp_path / "b.npy") - expected).max() <= 1e-4
    assert '"fc1": ' in (tmp_path / "exp" / "model.json").read_text()


def test_scratch_model_has_the_pruned_shape_and_fresh_weights(pruned_run, small_ckpt, splits):
    base, pruned = load_checkpoint(small_ckpt), load_checkpoint(pruned_run / "model.pt")
    scratch = train_from_scratch(pruned, splits, recipe_of(base))
    assert scratch.alive == pruned.alive and scratch.map_counts() == pruned.map_counts()
    assert not torch.equal(scratch.state_dict["conv1.weight"], pruned.state_dict["conv1.weight"])
    model = scratch.build()
    assert count_params(model) == count_params(pruned.build())


def test_reinitialize_uses_the_pruned_fan_in(small_ckpt):
    model = load_checkpoint(small_ckpt).build()
    torch.manual_seed(0)
    reinitialize(model)
    bound = 1 / (8 * 49) ** 0.5          # default init bound for fc1 with 8 conv2 maps of 7x7
    assert float(model.fc1.weight.detach().abs().max()) <= bound


def test_comparison_table_ratios_are_against_the_base(pruned_run, small_ckpt, splits, tmp_path):
    base, pruned = load_checkpoint(small_ckpt), load_checkpoint(pruned_run / "model.pt")
    comparison = compare_models(base, pruned, splits, None, repeats=3)
    rows = comparison.table()
    assert [r["model"] for r in rows] == ["base", "pruned"]
    b, p = comparison.rows
    assert rows[1]["compression x"] == f"{b.params / p.params:.1f}" and rows[0]["compression x"] == "1.0"
    assert rows[1]["MAC reduction x"] == f"{b.macs / p.macs:.1f}"
    md, cs = comparison.write(tmp_path)
    assert md.read_text().count("\n|") >= 3 and cs.read_text().splitlines()[0].startswith("model,test_accuracy")


def test_loss_is_in_percentage_points():
    rows = [ModelRow("base", 0.9943, 100, 10, 1, {1: 2.0, 256: 4.0}),
            ModelRow("pruned", 0.9921, 10, 2, 1, {1: 1.0, 256: 1.0})]
    t = Comparison(rows, 2).table()
    assert t[1]["accuracy loss pp"] == "+0.22" and t[1]["speed-up b256 x"] == "4.0"
