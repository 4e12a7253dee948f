"""Latency runtimes: names checked, outputs equal to eager PyTorch, tables that say the runtime."""

import pytest
import torch
from torch import nn

from fmprune.costs import measure_latencies
from fmprune.errors import FmpruneError
from fmprune.runtimes import available_runtimes, check_runtimes, prepare
from fmprune.study.compare import Comparison, ModelRow


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


def test_unknown_runtime_is_one_clear_error():
    assert "eager" in available_runtimes()
    with pytest.raises(FmpruneError, match="unknown runtime 'tvm'"):
        check_runtimes(["eager", "tvm"])


def test_eager_latencies_are_medians_per_model():
    times = measure_latencies([_tiny(), _tiny()], (1, 8, 8), 4, repeats=3, warmup=1)
    assert len(times) == 2 and all(t > 0 for t in times)


@pytest.mark.skipif("onnxruntime" not in available_runtimes(), reason="needs the export extra")
def test_onnxruntime_runs_the_same_model():
    model = _tiny()
    (run,) = prepare([model], "onnxruntime", (1, 8, 8))
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(run(x)[0]), model(x), atol=1e-5)


def test_tables_name_the_runtime_of_every_latency():
    rows = [ModelRow("base", 0.99, 100, 10, 1, {1: 2.0, 256: 8.0}, {"onnxruntime": {1: 2.0, 256: 8.0},
                                                                  "eager": {1: 4.0, 256: 9.0}}),
            ModelRow("pruned", 0.98, 10, 2, 1, {1: 1.0, 256: 2.0}, {"onnxruntime": {1: 1.0, 256: 2.0},
                                                                  "eager": {1: 2.0, 256: 3.0}})]
    comparison = Comparison(rows, 2, ["onnxruntime", "eager"])
    t = comparison.table()
    assert t[1]["runtime"] == "onnxruntime" and t[1]["speed-up b256 x"] == "4.0"
    by_runtime = {(r["runtime"], r["batch"]): r for r in comparison.runtime_table()}
    assert by_runtime["eager", "256"]["pruned speed-up x"] == "3.00"
    assert by_runtime["eager", "256"]["pruned of MAC cut"] == "0.60"        # x3 of a x5 MAC cut
    assert by_runtime["onnxruntime", "1"]["base ms"] == "2000.000"
    text = comparison.to_markdown()
    assert "onnxruntime: onnxruntime (CPU execution provider)" in text and "| eager | 256 |" in text


def test_channels_last_runs_the_same_model_and_leaves_the_callers_layout():
    model = _tiny()
    (run,) = prepare([model], "eager-cl", (1, 8, 8))
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(run(x), model(x), atol=1e-6)
    assert model[0].weight.is_contiguous()
