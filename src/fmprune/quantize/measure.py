"""Quantise a checkpoint and measure the result against its float model: accuracy, size on disk,
latency, the ONNX copy in onnxruntime, and the efficiency score at the bits used. Writes a run
directory (quantize.json, score.json, model.int8.pt, model.int8.onnx)."""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import costs
from ..atomic import write_atomically, write_bytes_atomically
from ..data import QUANTIZATION_STREAM, Split, Splits, calibration_subset, sha256_file
from ..efficiency import SCORE_FILE, ScoreRecord, method_of, score_checkpoint, write_score_record
from ..errors import FmpruneError
from ..validate import check_numbers
from ..run.checkpoint import load_checkpoint
from ..run.rundir import claimed
from ..training import BatchStream, accuracy, evaluate, fine_tune, predict
from . import int8
from .common import QuantizationError
from .fake import calibrate, check_bits, fake_quantize
from .record import RECORD_FILE

TORCHSCRIPT_FILE = "model.int8.pt"
ONNX_FILE = "model.int8.onnx"
MODES = ("ptq", "qat")


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantise: real int8 (torch.ao) at 8/8 bits unless ``fake``; fake quantisation otherwise."""

    mode: str = "ptq"
    weight_bits: int = 8
    activation_bits: int = 8
    fake: bool = False
    calibration: int = 1000        # training images the ranges are calibrated on
    retrain: int = 0               # QAT minibatch iterations
    retrain_lr: float = 1e-4
    retrain_batch: int = 100
    eval_split: str = "test"
    onnx: bool = True
    latency_batches: tuple[int, ...] = (1, 100)
    repeats: int = 30
    seed: int = 0

    @property
    def real_int8(self) -> bool:
        return not self.fake and self.weight_bits == self.activation_bits == 8

    @property
    def kind(self) -> str:
        if self.real_int8:
            return "int8"
        return f"fake w{self.weight_bits}a{self.activation_bits}"

    def check(self) -> None:
        check_numbers(self)
        if self.mode not in MODES:
            raise QuantizationError(f"unknown mode {self.mode!r} (use {' or '.join(MODES)})")
        check_bits(self.weight_bits, "weight bits")
        check_bits(self.activation_bits, "activation bits")
        if self.mode == "qat" and self.retrain < 1:
            raise QuantizationError("--mode qat trains through the quantisation: give --retrain N (N >= 1)")
        if self.mode == "ptq" and self.retrain:
            raise QuantizationError("--retrain is for --mode qat; ptq does not train")
        if self.calibration < 1:
            raise QuantizationError("--calibration must be at least 1 training image")
        if self.eval_split not in ("val", "test"):
            raise QuantizationError(f"evaluation split must be val or test (got {self.eval_split!r})")
        if self.repeats < 1 or any(b < 1 for b in self.latency_batches):
            raise QuantizationError("latency repeats and batch sizes must be at least 1")


@dataclass
class Measured:
    """One model's figures: accuracy on the evaluation split, file size, median seconds per batch."""

    name: str
    accuracy: float
    bytes: int | None = None
    latency: dict[int, float] = field(default_factory=dict)


@dataclass
class QuantizeResult:
    config: QuantizeConfig
    source: str
    float_model: Measured
    quantized: Measured
    score_float: dict
    score_quantized: dict
    onnx: dict | None = None
    files: list[str] = field(default_factory=list)
    threads: int = 1
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "kind": self.config.kind, "source": self.source,
                "bits": {"weights": self.config.weight_bits, "activations": self.config.activation_bits},
                "float": asdict(self.float_model), "quantized": asdict(self.quantized),
                "onnx": self.onnx, "score_float": self.score_float, "score_quantized": self.score_quantized,
                "files": self.files, "torch_threads": self.threads, "torch_version": torch.__version__,
                "seconds": round(self.seconds, 1)}

    def to_text(self) -> str:
        c, f, q = self.config, self.float_model, self.quantized
        batches = list(c.latency_batches)
        head = f"{'model':<26}{c.eval_split + ' acc':>10}{'bytes':>13}" + "".join(
            f"{f'ms @ {b}':>12}" for b in batches) + f"{'score':>10}"
        lines = [head, "-" * len(head)]
        for m, s in ((f, self.score_float), (q, self.score_quantized)):
            size = f"{m.bytes:,}" if m.bytes is not None else "-"
            times = "".join(f"{m.latency[b] * 1e3:>12.3f}" if b in m.latency else f"{'-':>12}" for b in batches)
            lines.append(f"{m.name:<26}{m.accuracy:>10.4%}{size:>13}{times}{s['score']:>10.4g}")
        if self.onnx is not None:
            o = self.onnx
            lines.append(f"{'onnxruntime (int8 QDQ)':<26}{o['accuracy']:>10.4%}{o['bytes']:>13,}"
                         + f"{'-':>12}" * len(batches) + f"{self.score_quantized['score']:>10.4g}")
        lines.append("-" * len(head))
        if f.bytes and q.bytes:
            ratios = [f"size x{f.bytes / q.bytes:.2f} smaller"]
            ratios += [f"x{f.latency[b] / q.latency[b]:.2f} faster at batch {b}" for b in batches
                       if b in f.latency and b in q.latency]
            lines.append("int8 vs float: " + ", ".join(ratios) + f" ({self.threads} torch thread{'s' if self.threads != 1 else ''})")
        if self.onnx is not None:
            lines.append(f"ONNX vs the torch int8 model: same class for {self.onnx['agreement']:.2%} of the images, "
                         f"max |logit diff| {self.onnx['max_diff']:.3g} (kernels round differently: one "
                         "output quantisation step at most is expected)")
        return "\n".join(lines)


def _quantize(model: nn.Module, example: torch.Tensor, calib: torch.Tensor, train: Split,
              config: QuantizeConfig, on_step: Callable[[int, int, float], None] | None) -> nn.Module:
    """The quantised model: converted int8 (torch.ao) or fake-quantised (this package)."""
    torch.manual_seed(config.seed)
    if config.real_int8:
        prepared = int8.prepare_qat(model, example) if config.mode == "qat" else int8.prepare_ptq(model, example)
        int8.calibrate_observers(prepared, calib)
    else:
        prepared = calibrate(fake_quantize(model, config.weight_bits, config.activation_bits), calib)
    if config.mode == "qat":
        stream = BatchStream(train, config.retrain_batch, config.seed)
        optimizer = torch.optim.Adam(prepared.parameters(), lr=config.retrain_lr)
        fine_tune(prepared, stream, optimizer, config.retrain, None, on_step)
    return int8.convert(prepared) if config.real_int8 else prepared.eval()


def _serialized(module: torch.jit.ScriptModule) -> bytes:
    """The TorchScript file in memory: torch's writer aborts the process on a full disk, so Python
    writes it (:func:`~fmprune.atomic.write_bytes_atomically`)."""
    buf = io.BytesIO()
    int8.save_torchscript(module, buf)
    return buf.getvalue()


def _bytes(module: torch.jit.ScriptModule) -> int:
    return len(_serialized(module))


def _onnx_check(path: Path, model: nn.Module, split: Split) -> dict:
    try:
        import onnxruntime
    except ImportError:
        raise FmpruneError("ONNX export needs onnx and onnxruntime: pip install 'fmprune[export]' "
                           "(or pass --no-onnx)") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])

    got = predict(run, split.images)
    with torch.no_grad():
        expected = predict(model, split.images)
    return {"path": path.name, "bytes": path.stat().st_size, "accuracy": accuracy(got, split.labels),
            "agreement": float((got.argmax(1) == expected.argmax(1)).float().mean()),
            "max_diff": float((got - expected).abs().max())}


def quantize_checkpoint(ckpt_path: Path, splits: Splits, config: QuantizeConfig, run_dir: Path,
                        on_step: Callable[[int, int, float], None] | None = None) -> QuantizeResult:
    """Quantise the checkpoint's model, measure it against the float model, write ``run_dir``
    (held against other processes; a pruning run's directory or another quantisation's is refused)."""
    config.check()
    with claimed(run_dir, "quantize"):
        check_same_quantization(Path(run_dir), config, ckpt_path)
        return _quantize_into(ckpt_path, splits, config, Path(run_dir), on_step)


def check_same_quantization(run_dir: Path, config: QuantizeConfig, ckpt_path: Path) -> None:
    """Refuse a run directory holding a quantisation of other settings or of another checkpoint:
    rewriting it would leave files of both (an int8 model beside a 4-bit record)."""
    if not (run_dir / RECORD_FILE).is_file():
        return
    try:
        previous = json.loads((run_dir / RECORD_FILE).read_text())
        same = previous["config"] == json.loads(json.dumps(asdict(config))) and \
            previous["source"] == str(Path(ckpt_path).resolve())
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if not same:
        raise QuantizationError(f"{run_dir}: holds a quantisation with other settings or of another "
                                "checkpoint; use another --run-dir")


def _quantize_into(ckpt_path: Path, splits: Splits, config: QuantizeConfig, run_dir: Path,
                   on_step: Callable[[int, int, float], None] | None) -> QuantizeResult:
    start = time.perf_counter()
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.data_fingerprint and ckpt.data_fingerprint != splits.fingerprint():
        raise FmpruneError(f"{ckpt_path}: made on other data (fingerprint {ckpt.data_fingerprint}); "
                           "pass the --data-dir it was trained on")
    model = ckpt.build()
    example = torch.zeros(1, *ckpt.input_shape)
    split = getattr(splits, config.eval_split)
    # ranges are calibrated on at most every training image (a larger --calibration takes them all)
    calibration = calibration_subset(splits.train, min(config.calibration, len(splits.train)), config.seed,
                                     QUANTIZATION_STREAM)
    quantized = _quantize(model, example, calibration.images, splits.train, config, on_step)
    run_dir.mkdir(parents=True, exist_ok=True)
    float_m = Measured("float32", evaluate(model, split))
    quant_m = Measured(f"{config.kind} {config.mode}", evaluate(quantized, split))
    files, onnx = [], None
    if config.real_int8:
        float_ts, int8_ts = int8.to_torchscript(model, example), int8.to_torchscript(quantized, example)
        write_bytes_atomically(run_dir / TORCHSCRIPT_FILE, _serialized(int8_ts))
        files.append(TORCHSCRIPT_FILE)
        float_m.bytes, quant_m.bytes = _bytes(float_ts), (run_dir / TORCHSCRIPT_FILE).stat().st_size
        for b in config.latency_batches:
            reps = config.repeats if b == 1 else max(5, config.repeats // 3)
            float_m.latency[b], quant_m.latency[b] = costs.measure_latencies(
                [float_ts, int8_ts], tuple(ckpt.input_shape), b, reps)
        if config.onnx:
            buffer = io.BytesIO()   # torch's writer aborts the process on a full disk: Python writes the file
            int8.export_onnx(quantized, example, buffer)
            path = write_bytes_atomically(run_dir / ONNX_FILE, buffer.getvalue())
            onnx = _onnx_check(path, quantized, split)
            files.append(ONNX_FILE)
    float_score = score_checkpoint(ckpt).to_dict()
    quant_score = score_checkpoint(ckpt, config.weight_bits, config.activation_bits).to_dict()
    result = QuantizeResult(config, str(Path(ckpt_path).resolve()), float_m, quant_m, float_score, quant_score, onnx, files,
                            torch.get_num_threads(), time.perf_counter() - start)
    record = result.to_dict() | {"source_sha256": sha256_file(Path(ckpt_path))}
    write_atomically(run_dir / RECORD_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    method = f"{method_of(ckpt)} + {config.kind} {config.mode}"
    write_score_record(run_dir / SCORE_FILE, ScoreRecord(
        label=run_dir.name, method=method, accuracy=quant_m.accuracy, split=config.eval_split,
        score=quant_score["score"], values=quant_score, source=result.source))
    return result
