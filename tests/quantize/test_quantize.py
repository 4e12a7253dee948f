"""Quantisation: fake quantisers against hand-computed grids, real int8 (torch.ao) PTQ and QAT on a
small trained LeNet, the TorchScript and ONNX files it writes, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from fmprune.cli import cli
from fmprune.efficiency import read_score_record
from fmprune.models import LeNet
from fmprune.quantize import QuantizationError, QuantizeConfig, calibrate, fake_quantize, quantize_checkpoint
from fmprune.quantize.fake import ActivationQuantizer, WeightQuantizer
from fmprune.quantize import int8
from fmprune.training import predict

FAST = dict(calibration=200, repeats=2, latency_batches=(1, 8))


def test_weights_round_per_channel_on_a_symmetric_grid():
    w = torch.tensor([[0.4, -1.0, 0.26], [2.0, 0.9, -0.1]])
    # 3 bits: levels -3..3; scales max|w|/3 = 1/3 and 2/3
    expected = torch.tensor([[1 / 3, -1.0, 1 / 3], [2.0, 2 / 3, 0.0]])
    assert torch.allclose(WeightQuantizer(3)(w), expected)
    w4 = torch.randn(5, 2, 3, 3)
    q = WeightQuantizer(4)(w4)
    for c in range(5):
        step = w4[c].abs().max() / 7
        assert torch.allclose(q[c] / step, torch.round(q[c] / step), atol=1e-4)   # on the grid
        assert len(torch.unique(q[c])) <= 15


def test_activations_round_on_the_calibrated_affine_grid():
    quant = ActivationQuantizer(2)
    quant.observing = True
    quant(torch.tensor([-1.0, 0.5, 3.0]))
    quant.observing = False
    quant.eval()
    scale, zero = quant.qparams()
    assert scale.item() == pytest.approx(4 / 3) and zero.item() == 1   # range [-1, 3], 4 levels
    got = quant(torch.tensor([1.0, 3.0, -1.0, 10.0]))
    assert torch.allclose(got, torch.tensor([4 / 3, 8 / 3, -4 / 3, 8 / 3]))


def test_activation_ranges_always_hold_zero():
    quant = ActivationQuantizer(2)
    quant.observing = True
    quant(torch.tensor([1.0, 4.0]))             # observed [1, 4]; the grid covers [0, 4]
    quant.observing = False
    quant.eval()
    scale, zero = quant.qparams()
    assert scale.item() == pytest.approx(4 / 3) and zero.item() == 0
    assert torch.allclose(quant(torch.tensor([0.0, 1.0, 4.0])), torch.tensor([0.0, 4 / 3, 4.0]))


def test_uncalibrated_activations_are_refused():
    with pytest.raises(QuantizationError, match="calibrate"):
        ActivationQuantizer(8).eval()(torch.ones(2))


def test_fake_quantisation_copies_and_converges_with_bits(small_trained, splits):
    x = splits.test.images[:64]
    with torch.no_grad():
        ref = small_trained(x)
    diffs = {}
    for bits in (2, 4, 8, 16):
        q = calibrate(fake_quantize(small_trained, bits, bits), splits.train.images[:200])
        with torch.no_grad():
            diffs[bits] = float((q(x) - ref).abs().max())
    assert diffs[2] > diffs[4] > diffs[8] > diffs[16] and diffs[16] < 1e-3
    assert not any(isinstance(m, ActivationQuantizer) for m in small_trained.modules())


def test_fake_quantised_training_passes_gradients(small_trained, splits):
    q = calibrate(fake_quantize(small_trained, 4, 4), splits.train.images[:200]).train()
    loss = nn.functional.cross_entropy(q(splits.train.images[:50]), splits.train.labels[:50])
    loss.backward()
    conv = next(m for m in q.modules() if isinstance(m, nn.Conv2d))
    grad = conv.parametrizations.weight.original.grad
    assert grad is not None and grad.abs().sum() > 0


def test_batchnorm_is_folded_before_the_weights_are_rounded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([10.0, 0.1, 1.0, 3.0]))   # scales that change the grid
        model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.rand(16, 3, 8, 8)
    q = calibrate(fake_quantize(model, 16, 16), x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    with torch.no_grad():
        assert torch.allclose(q(x), model(x), atol=1e-3)    # at 16 bits: the same function


@pytest.mark.parametrize("bits", [1, 17])
def test_bit_widths_outside_2_to_16_are_refused(small_trained, bits):
    with pytest.raises(QuantizationError, match="2..16"):
        fake_quantize(small_trained, bits, 8)


def test_real_int8_model_has_integer_weights(small_trained, splits):
    prepared = int8.prepare_ptq(small_trained, torch.zeros(1, 1, 28, 28))
    int8.calibrate_observers(prepared, splits.train.images[:200])
    model = int8.convert(prepared)
    assert model.conv1.weight().dtype == torch.qint8 and model.fc1.weight().dtype == torch.qint8
    x = splits.test.images[:100]
    with torch.no_grad():
        assert (model(x).argmax(1) == small_trained(x).argmax(1)).float().mean() >= 0.95


LOAD_WITHOUT_FMPRUNE = """
import sys
sys.modules["fmprune"] = None          # any import of fmprune would now fail
import numpy as np, torch, onnxruntime
x = np.load(sys.argv[2])
model = torch.jit.load(sys.argv[1] + "/model.int8.pt")
session = onnxruntime.InferenceSession(sys.argv[1] + "/model.int8.onnx")
np.save(sys.argv[3], model(torch.from_numpy(x)).numpy())
np.save(sys.argv[4], session.run(None, {"images": x})[0])
"""


@pytest.fixture(scope="module")
def ptq_run(small_ckpt, splits, tmp_path_factory):
    run = tmp_path_factory.mktemp("ptq")
    return run, quantize_checkpoint(small_ckpt, splits, QuantizeConfig(**FAST), run)


def test_ptq_measures_and_writes_a_deployable_model(ptq_run, splits, tmp_path):
    run, result = ptq_run
    assert result.quantized.accuracy >= result.float_model.accuracy - 0.05
    assert abs(result.onnx["accuracy"] - result.quantized.accuracy) <= 0.02 and result.onnx["agreement"] >= 0.98
    assert set(result.quantized.latency) == {1, 8} and result.quantized.bytes > 0
    x = splits.test.images[:37].numpy()
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", LOAD_WITHOUT_FMPRUNE, run, tmp_path / "x.npy", tmp_path / "a.npy",
                    tmp_path / "b.npy"], check=True, capture_output=True)
    torchscript, onnx = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert torchscript.shape == (37, 10)
    assert (torchscript.argmax(1) == onnx.argmax(1)).mean() >= 0.95


def test_ptq_records_bits_and_score(ptq_run, small_ckpt):
    run, result = ptq_run
    record = json.loads((run / "quantize.json").read_text())
    assert record["bits"] == {"weights": 8, "activations": 8} and record["kind"] == "int8"
    score = read_score_record(run / "score.json")
    assert score.values["q_w"] == 8 and score.accuracy == result.quantized.accuracy
    assert score.score == pytest.approx(result.score_float["score"] / 4)   # 8 of 32 bits, both terms
    assert score.method == "base + int8 ptq"


def test_cli_score_reads_the_bits_of_a_quantisation_run(ptq_run):
    run, result = ptq_run
    out = CliRunner().invoke(cli, ["score", str(run)])
    assert out.exit_code == 0, out.output
    assert "8, 8 bits (int8 ptq" in out.output
    assert f"{result.score_quantized['score']:.6f}" in out.output


def test_int8_qat_trains_through_the_quantisation(small_ckpt, splits, tmp_path):
    steps = []
    result = quantize_checkpoint(small_ckpt, splits, QuantizeConfig(mode="qat", retrain=5, onnx=False, **FAST),
                                 tmp_path, lambda step, total, loss: steps.append(step))
    assert steps == [1, 2, 3, 4, 5]
    assert result.quantized.accuracy >= result.float_model.accuracy - 0.1
    assert (tmp_path / "model.int8.pt").is_file() and not (tmp_path / "model.int8.onnx").exists()


def test_fake_run_at_4_bits(small_ckpt, splits, tmp_path):
    config = QuantizeConfig(weight_bits=4, activation_bits=6, **FAST)
    result = quantize_checkpoint(small_ckpt, splits, config, tmp_path)
    assert config.kind == "fake w4a6" and result.files == [] and result.quantized.bytes is None
    assert result.score_quantized["q_w"] == 4 and result.score_quantized["q_a"] == 6
    assert result.quantized.accuracy >= result.float_model.accuracy - 0.1


@pytest.mark.parametrize("config, message", [
    (QuantizeConfig(mode="qat"), "--retrain"),
    (QuantizeConfig(retrain=3), "ptq does not train"),
    (QuantizeConfig(mode="int4"), "unknown mode"),
    (QuantizeConfig(weight_bits=20), "2..16"),
])
def test_bad_configs_fail_before_any_work(config, message, small_ckpt, splits, tmp_path):
    with pytest.raises(QuantizationError, match=message):
        quantize_checkpoint(small_ckpt, splits, config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_quantize_prints_the_comparison(small_ckpt, idx_dir, tmp_path):
    run = tmp_path / "q"
    result = CliRunner().invoke(cli, ["quantize", str(small_ckpt), "--bits", "6", "--run-dir", str(run),
                                      "--calibration", "100", "--data-dir", str(idx_dir)])
    assert result.exit_code == 0, result.output
    assert "fake w6a6 ptq" in result.output and (run / "score.json").is_file()


def test_torchscript_runs_at_any_batch(small_trained):
    prepared = int8.prepare_ptq(small_trained, torch.zeros(1, 1, 28, 28))
    int8.calibrate_observers(prepared, torch.rand(64, 1, 28, 28))
    script = int8.to_torchscript(int8.convert(prepared), torch.zeros(1, 1, 28, 28))
    assert predict(script, torch.rand(13, 1, 28, 28), batch=5).shape == (13, 10)


def test_untraceable_models_are_refused_clearly():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(QuantizationError, match="cannot trace"):
        int8.prepare_ptq(Branchy(), torch.ones(1, 4))


def test_lenet_full_width_int8_is_smaller(tmp_path):
    model = LeNet().eval()
    prepared = int8.prepare_ptq(model, torch.zeros(1, 1, 28, 28))
    int8.calibrate_observers(prepared, torch.rand(32, 1, 28, 28))
    small = int8.to_torchscript(int8.convert(prepared), torch.zeros(1, 1, 28, 28))
    big = int8.to_torchscript(model, torch.zeros(1, 1, 28, 28))
    int8.save_torchscript(small, tmp_path / "q.pt")
    int8.save_torchscript(big, tmp_path / "f.pt")
    assert (tmp_path / "f.pt").stat().st_size > 3.5 * (tmp_path / "q.pt").stat().st_size
