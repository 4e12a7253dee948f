"""Criterion quality: Spearman correlation with the oracle, its outputs, the CLI and the report."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

import fmprune
from fmprune.cli import cli
from fmprune.errors import FmpruneError
from fmprune.study import rank_quality as rq
from fmprune.study.report import write_report


def test_spearman_by_hand_with_and_without_ties():
    # ranks differ by one swap: 1 - 6 * (1 + 1) / (4 * 15) = 0.8
    assert rq.spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 30, 20, 40])) == pytest.approx(0.8)
    assert rq.spearman(np.array([3.0, 2, 1]), np.array([1.0, 2, 3])) == pytest.approx(-1.0)
    # ties share their mean rank: [0.5, 0.5, 2] against [0, 1, 2]
    ra = np.array([0.5, 0.5, 2.0]) - 1
    rb = np.array([0.0, 1.0, 2.0]) - 1
    expected = (ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum())
    assert rq.spearman(np.array([5.0, 5.0, 9.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(expected)
    assert np.isnan(rq.spearman(np.ones(4), np.arange(4.0)))
    assert list(rq.average_ranks(np.array([2.0, 1.0, 2.0, 0.0]))) == [2.5, 1.0, 2.5, 0.0]


def test_entries_and_batches_are_checked():
    assert rq.parse_entry("taylor+l2") == ("taylor", "l2")
    assert rq.parse_entry(" apoz ") == ("apoz", "none")
    with pytest.raises(FmpruneError, match="unknown criterion 'nope'"):
        rq.parse_entry("nope")
    with pytest.raises(FmpruneError, match="unknown normalisation 'l3'"):
        rq.parse_entry("taylor+l3")


def test_calibration_batches_are_disjoint_and_limited(splits):
    batches = rq.calibration_batches(splits.train, 3, 40, seed=1)
    seen = [{tuple(x.flatten()[:40].tolist()) for x in b.images} for b in batches]
    assert all(len(s) == 40 for s in seen)
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])
    with pytest.raises(FmpruneError, match="need 30,000 training images"):
        rq.calibration_batches(splits.train, 3, 10_000, seed=0)


@pytest.fixture(scope="module")
def measured(small_ckpt, splits):
    _, graph = fmprune.load_checkpoint(small_ckpt).build_traced()
    return rq.measure(graph, splits.train, None, ["oracle_abs", "oracle", "taylor", "taylor+l2", "random", "taylor_bn"],
                      batches=2, batch_size=60, seed=0, source="small")


def test_the_oracle_agrees_with_itself_and_normalisation_matters_only_across_layers(measured):
    r = measured
    assert r.layers == ["conv1", "conv2", "fc1"]
    assert r.columns == ["conv1", "conv2", "fc1", rq.MEAN_OF_LAYERS, rq.ALL_LAYERS]
    for column in r.columns:
        assert r.values("oracle_abs", "oracle_abs", column) == pytest.approx([1.0, 1.0])
        assert r.values("oracle", "oracle", column) == pytest.approx([1.0, 1.0])
    for layer in r.layers:
        assert r.values("oracle_abs", "taylor", layer) == r.values("oracle_abs", "taylor+l2", layer)
    assert r.values("oracle_abs", "taylor", rq.ALL_LAYERS) != r.values("oracle_abs", "taylor+l2", rq.ALL_LAYERS)
    assert r.summary("oracle_abs", "taylor", rq.MEAN_OF_LAYERS)[0] > 0.3   # Taylor tracks the oracle here
    assert "taylor_bn" in r.skipped and "BatchNorm" in r.skipped["taylor_bn"]
    assert r.best("oracle_abs", rq.MEAN_OF_LAYERS) in ("taylor", "taylor+l2")
    assert set(r.seconds) == {"oracle", "oracle_abs", "taylor", "random"}


def test_outputs_round_trip_and_report_section(measured, tmp_path):
    paths = rq.write(measured, tmp_path / "rq")
    for key in ("json", "csv", "summary", "markdown", "figure"):
        assert paths[key].is_file(), key
    rows = list(csv.DictReader(paths["csv"].open()))
    # 2 references x 5 criteria (taylor_bn skipped) x 5 columns x 2 batches
    assert len(rows) == 2 * 5 * 5 * 2
    again = rq.read(tmp_path / "rq")
    assert again.rows == json.loads(json.dumps(measured.rows))
    md = paths["markdown"].read_text()
    assert "| Taylor + L2 |" in md and "Skipped taylor_bn" in md and "Against |Δloss| (oracle-abs)" in md
    report = write_report([tmp_path / "rq"], tmp_path / "report").read_text()
    assert "## Criterion quality: rankings against the oracle" in report
    assert "Per-layer L2 normalisation makes Taylor's whole-network ranking" in report
    assert "figures/rank-quality-0.png" in report and (tmp_path / "report" / "figures" / "rank-quality-0.png").is_file()


def test_conclusions_follow_the_numbers():
    r = rq.RankQuality(["a", "b"], ["taylor", "taylor+l2", "min_weight", "mean_activation"], 1, 10, 0)
    values = {"taylor": (0.8, 0.5), "taylor+l2": (0.8, 0.7), "min_weight": (0.9, 0.6), "mean_activation": (0.4, 0.3)}
    for entry, (per_layer, whole) in values.items():
        r.rows += [{"reference": "oracle_abs", "criterion": entry, "layer": rq.MEAN_OF_LAYERS, "batch": 0,
                    "spearman": per_layer},
                   {"reference": "oracle_abs", "criterion": entry, "layer": rq.ALL_LAYERS, "batch": 0,
                    "spearman": whole}]
    text = "\n".join(rq.conclusions(r))
    assert "Taylor correlates best with the oracle among the paper's criteria" in text
    assert "per layer: **does not hold** (best here: Minimum weight, 0.90; Taylor 0.80)" in text
    assert "Per-layer L2 normalisation makes Taylor's whole-network ranking closer to the oracle's: **holds**" in text
    assert "Weight magnitude ranks the whole network worst" in text and "**does not hold** (0.60)" in text


def test_cli_rank_quality(small_ckpt, idx_dir, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["rank-quality", str(small_ckpt), "--data-dir", str(idx_dir), "--layers",
                                      "conv2,fc1", "--criteria", "taylor,mean_activation", "--batches", "2",
                                      "--batch-size", "30", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "| criterion | conv2 | fc1 | mean of layers | all layers | s per batch |" in result.output
    assert (out / "spearman.csv").is_file() and (out / "spearman.png").is_file()
    bad = CliRunner().invoke(cli, ["rank-quality", str(small_ckpt), "--data-dir", str(idx_dir), "--criteria",
                                   "taylor,bogus", "--out-dir", str(out)])
    assert bad.exit_code != 0 and "unknown criterion 'bogus'" in str(bad.exception)
