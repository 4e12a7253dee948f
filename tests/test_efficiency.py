"""The efficiency score: the reference network's 2.0 and 1.0, hand-computed values for a pruned,
sparse, quantised LeNet, and what `fmprune score` prints."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner
from torch.nn.utils import prune

from fmprune import costs
from fmprune.cli import cli
from fmprune.efficiency import (REFERENCE_MACS, REFERENCE_PARAMS, ScoreError, ScoreInputs, ScoreRecord,
                                efficiency_score, score_model, write_score_record, zero_parameters)
from fmprune.errors import FmpruneError
from fmprune.models import LeNet, create_model
from fmprune.study.report import NoRunsError, pareto_front, write_report


def resnet18_cifar_counts() -> tuple[int, int]:
    """ResNet-18 (CIFAR: 3x3 stem, no max-pool, 32x32 input, 10 classes) counted by hand:
    parameters (conv and linear weights, linear bias, BatchNorm scale and shift) and MACs."""
    params, macs = 0, 0

    def conv(cin: int, cout: int, k: int, side: int) -> None:   # side: output resolution
        nonlocal params, macs
        params += cin * cout * k * k + 2 * cout                  # no bias; BatchNorm after it
        macs += side * side * cout * cin * k * k

    conv(3, 64, 3, 32)
    cin, side = 64, 32
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage and not block else 1
            side //= stride
            conv(cin, width, 3, side)
            conv(width, width, 3, side)
            if stride == 2:
                conv(cin, width, 1, side)                        # projection shortcut
            cin = width
    params += 512 * 10 + 10
    macs += 512 * 10
    return params, macs


def test_reference_counts_are_the_published_figures():
    w, f = resnet18_cifar_counts()
    assert (w, f) == (11_173_962, 555_422_720)
    # the constants are those counts at 16 bits (in 32-bit units), to two significant digits
    assert float(f"{w * 16 / 32:.2g}") == REFERENCE_PARAMS
    assert float(f"{f * 16 / 32:.2g}") == REFERENCE_MACS


def test_reference_scores_two_at_16_bits_and_one_at_8():
    w, f = resnet18_cifar_counts()
    at16 = efficiency_score(ScoreInputs(w=w, f=f, q_w=16, q_a=16))
    at8 = efficiency_score(ScoreInputs(w=w, f=f, q_w=8, q_a=8))
    assert round(at16.total, 1) == 2.0 and round(at8.total, 1) == 1.0
    assert at16.total == pytest.approx(1.98950, abs=1e-5)   # exact counts against rounded constants
    # with the counts the constants stand for, exactly 2 and 1
    exact = ScoreInputs(w=int(2 * REFERENCE_PARAMS), f=int(2 * REFERENCE_MACS), q_w=16, q_a=16)
    assert efficiency_score(exact).total == 2.0
    assert efficiency_score(ScoreInputs(exact.w, exact.f, q_w=8, q_a=8)).total == 1.0
    assert efficiency_score(ScoreInputs(exact.w, exact.f, q_w=8, q_a=16)).mac_term == 1.0   # max(q_w, q_a)
    assert efficiency_score(ScoreInputs(exact.w, exact.f, q_w=16, q_a=8)).mac_term == 1.0


def test_zoo_resnet18_counts_match_the_hand_count():
    try:
        model = create_model("resnet18", (3, 32, 32), 10)
    except FmpruneError:
        pytest.skip("resnet18 is not in the zoo yet")
    assert costs.count_params(model) == resnet18_cifar_counts()[0]
    assert costs.count_macs(model, torch.zeros(1, 3, 32, 32)) == resnet18_cifar_counts()[1]


def pruned_sparse_lenet() -> LeNet:
    """LeNet pruned to (4, 6, 10) maps, with fc1's first 5 units' weights zeroed (5 x 294)."""
    torch.manual_seed(0)
    model = LeNet(widths=(4, 6, 10))
    with torch.no_grad():
        model.fc1.weight[:5] = 0
    return model


# by hand: conv1 1*4*25+4, conv2 4*6*25+6, fc1 (6*7*7)*10+10, fc2 10*10+10
LENET_W = 104 + 606 + 2950 + 110
# conv1 28*28*4*25, conv2 14*14*6*4*25, fc1 294*10, fc2 10*10
LENET_F = 78_400 + 117_600 + 2_940 + 100
LENET_ZEROS = 5 * 294


def test_pruned_sparse_quantised_lenet_by_hand():
    report = score_model(pruned_sparse_lenet(), torch.zeros(1, 1, 28, 28), q_w=4, q_a=8, unpruned=LeNet())
    i = report.score.inputs
    assert (i.w, i.f, report.zeros) == (3770, 199_040, 1470)
    assert i.p_u == pytest.approx(1470 / 3770) and i.p_s == 0.0
    param_term = (3770 - 1470) * (4 / 32) / 5.6e6        # [1 - p_u] * w = non-zeros
    mac_term = 199_040 * (8 / 32) / 2.8e8               # max(4, 8) bits
    assert report.score.param_term == pytest.approx(param_term, rel=1e-12)
    assert report.score.mac_term == pytest.approx(mac_term, rel=1e-12)
    assert report.score.total == pytest.approx(2.290535714e-4, rel=1e-9)
    s = report.structured   # against the full LeNet (3,274,634 parameters, 13,883,904 MACs)
    assert (s.base_w, s.base_f) == (3_274_634, 13_883_904)
    assert s.of_params == pytest.approx(1 - 3770 / 3_274_634) and s.of_macs == pytest.approx(1 - 199_040 / 13_883_904)


def test_zeros_under_torch_prune_masks_are_counted_once():
    model = pruned_sparse_lenet()
    mask = torch.ones_like(model.conv2.weight)
    mask[0] = 0                                          # 4*25 more zeros, held by a mask
    prune.custom_from_mask(model.conv2, "weight", mask)
    assert zero_parameters(model) == (LENET_ZEROS + 100, LENET_W)
    report = score_model(model, torch.zeros(1, 1, 28, 28))
    assert report.zeros == LENET_ZEROS + 100 and report.score.inputs.w == LENET_W


def test_pruned_checkpoint_reports_p_s_against_its_unpruned_spec(tmp_path):
    from fmprune.efficiency import score_checkpoint
    from fmprune.graph import trace
    from fmprune.models.spec import ModelSpec, build_model
    from fmprune.run.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint

    spec = ModelSpec("lenet", {"widths": (6, 8, 24)})
    model = build_model(spec)
    graph = trace(model, torch.zeros(1, 1, 28, 28))
    graph.remove("conv1", [0, 1])
    graph.remove("fc1", list(range(14)))               # now (4, 8, 10) maps
    ckpt = load_checkpoint(save_checkpoint(make_checkpoint(model, spec, graph), tmp_path / "pruned.pt"))
    report = score_checkpoint(ckpt, 8, 8)
    # by hand: unpruned 156 + 1,208 + 9,432 + 250 parameters, 117,600 + 235,200 + 9,408 + 240 MACs;
    # pruned 104 + 808 + 3,930 + 110 parameters, 78,400 + 156,800 + 3,920 + 100 MACs
    s = report.structured
    assert (s.base_w, s.base_f, s.w, s.f) == (11_046, 362_448, 4_952, 239_220)
    assert report.score.inputs.p_s == 0.0              # already in w and f
    assert report.score.total == pytest.approx(4_952 / 4 / 5.6e6 + 239_220 / 4 / 2.8e8)
    assert s.of_params == pytest.approx(1 - 4_952 / 11_046) and s.of_macs == pytest.approx(1 - 239_220 / 362_448)


def test_architecture_scores_have_no_sparsity():
    model = pruned_sparse_lenet()
    report = score_model(model, torch.zeros(1, 1, 28, 28), sparsity=False)
    assert report.zeros == 0 and report.score.inputs.p_u == 0.0
    assert report.score.total == pytest.approx(LENET_W / 5.6e6 + LENET_F / 2.8e8)


@pytest.mark.parametrize("inputs, message", [
    (ScoreInputs(w=-1, f=1), "counts"),
    (ScoreInputs(w=1, f=1, p_u=1.5), "p_u"),
    (ScoreInputs(w=1, f=1, p_s=0.6, p_u=0.6), "must not exceed 1"),
    (ScoreInputs(w=1, f=1, q_w=0), "q_w"),
    (ScoreInputs(w=1, f=1, q_a=33), "q_a"),
])
def test_bad_inputs_are_refused(inputs, message):
    with pytest.raises(ScoreError, match=message):
        efficiency_score(inputs)


def test_p_s_scales_both_terms():
    full = efficiency_score(ScoreInputs(w=1000, f=5000))
    half = efficiency_score(ScoreInputs(w=1000, f=5000, p_s=0.5))
    assert math.isclose(half.param_term, full.param_term / 2) and math.isclose(half.mac_term, full.mac_term / 2)


def test_cli_scores_an_architecture():
    result = CliRunner().invoke(cli, ["score", "--model", "lenet", "--input-shape", "1,28,28", "--qw", "8", "--qa", "8"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "3,274,634" in out and "13,883,904" in out
    expected = 3_274_634 * 0.25 / 5.6e6 + 13_883_904 * 0.25 / 2.8e8
    assert f"score       {expected:.6f}" in out


def test_cli_needs_a_path_or_a_model():
    result = CliRunner().invoke(cli, ["score"])
    assert result.exit_code != 0 and "either PATH" in str(result.exception)


def test_cli_scores_a_checkpoint_and_saves_a_record(small_ckpt, tmp_path):
    ckpt = tmp_path / "small.pt"
    ckpt.write_bytes(small_ckpt.read_bytes())
    result = CliRunner().invoke(cli, ["score", str(ckpt), "--save"])
    assert result.exit_code == 0, result.output
    assert "32, 32 bits (float checkpoint)" in result.output
    assert "p_u         0.000000 (0 of" in result.output
    record = tmp_path / "small.score.json"
    assert record.is_file() and '"method": "base"' in record.read_text()
    refused = CliRunner().invoke(cli, ["score", str(ckpt), "--save", "--qw", "8"])
    assert refused.exit_code != 0 and "fmprune quantize" in str(refused.exception)


def record(label: str, score: float, accuracy: float | None, method: str = "m") -> ScoreRecord:
    return ScoreRecord(label, method, accuracy, "test", score, {"score": score, "q_w": 8, "q_a": 8})


def test_pareto_front_keeps_only_undominated_results():
    a, b, c, d, e = (record("a", 1.0, 0.8), record("b", 2.0, 0.9), record("c", 1.5, 0.7),
                     record("d", 3.0, 0.9), record("e", 0.5, None))
    assert [r.label for r in pareto_front([d, c, b, a, e])] == ["a", "b"]   # d: b is as good for less
    assert [r.label for r in pareto_front([record("x", 1.0, 0.9), record("y", 1.0, 0.95)])] == ["y"]


def test_report_plots_and_tables_scored_results_alone(tmp_path):
    results = tmp_path / "results"
    for i, (score, acc, method) in enumerate([(0.8, 0.90, "int8"), (0.2, 0.85, "fake"), (0.4, 0.91, "int8")]):
        (results / f"r{i}").mkdir(parents=True)
        write_score_record(results / f"r{i}" / "score.json", record(f"r{i}", score, acc, method))
    write_score_record(results / "base.score.json", record("base", 2.0, None, "base"))
    report = write_report([results], tmp_path / "report")
    text = report.read_text()
    assert "## Accuracy against efficiency score" in text
    assert (tmp_path / "report" / "figures" / "accuracy-vs-score.png").stat().st_size > 10_000
    assert (tmp_path / "report" / "figures" / "accuracy-vs-score.svg").is_file()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| result")]
    assert [row.split(" | ")[0] for row in rows] == ["| r1", "| r2", "| r0", "| base"]   # by score
    assert [row.endswith("| yes |") for row in rows] == [True, True, False, False]


def test_report_without_runs_or_scores_still_fails(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoRunsError):
        write_report([tmp_path / "empty"], tmp_path / "report")
