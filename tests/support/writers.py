"""Every command that writes, told to write under a directory (``WRITERS``), and what a failed
write may leave behind (``temporaries``): shared by the read-only, full-disk and kill tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*.tmp")]


def one_run_file(side: Path, ckpt, section: str) -> Path:
    """An experiment or tune file in ``side``, a writable directory."""
    path = side / f"{section}.toml"
    path.write_text(f'[{section}]\nname = "x"\ncheckpoint = "{ckpt}"\n' + (
        '[axes]\ncriterion = ["min_weight"]\n' if section == "experiment" else
        '[objective]\nminimize = "macs"\naccuracy = 0.5\n[params]\nretrain = { low = 0, high = 2 }\n'))
    return path


def one_run(ckpt, data, run: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "fmprune", "prune", "--checkpoint", str(ckpt), "--data-dir", str(data),
                           "--run-dir", str(run), "--steps", "1", "--criterion", "min_weight", "--quiet"])
    assert proc.returncode == 0
    return run


# every command that writes, each told to write under RO (its inputs, if it needs some, in SIDE)
WRITERS = {
    "train": lambda ckpt, data, ro, side: ["train", "--data-dir", data, "--out", ro / "m.pt", "--max-iters", "1", "--quiet"],
    "prune": lambda ckpt, data, ro, side: ["prune", "--checkpoint", ckpt, "--data-dir", data, "--run-dir", ro / "r",
                                     "--steps", "1", "--criterion", "min_weight", "--quiet"],
    "oneshot": lambda ckpt, data, ro, side: ["oneshot", ckpt, "--data-dir", data, "--run-dir", ro / "o", "--ratio", "0.5"],
    "sparsify": lambda ckpt, data, ro, side: ["sparsify", "--checkpoint", ckpt, "--data-dir", data, "--run-dir", ro / "sp",
                                        "--amount", "0.5"],
    "compare": lambda ckpt, data, ro, side: ["compare", ckpt, "--base", ckpt, "--data-dir", data, "--out-dir", ro / "c"],
    "export": lambda ckpt, data, ro, side: ["export", ckpt, "--out-dir", ro / "e", "--no-onnx"],
    "quantize": lambda ckpt, data, ro, side: ["quantize", ckpt, "--data-dir", data, "--run-dir", ro / "q", "--no-onnx"],
    "sensitivity": lambda ckpt, data, ro, side: ["sensitivity", ckpt, "--data-dir", data, "--out-dir", ro / "s",
                                           "--ratios", "0.5", "--quiet"],
    "rank-quality": lambda ckpt, data, ro, side: ["rank-quality", ckpt, "--data-dir", data, "--out-dir", ro / "rq",
                                            "--layers", "conv1", "--batches", "1", "--batch-size", "100"],
    "sweep": lambda ckpt, data, ro, side: ["sweep", one_run_file(side, ckpt, "experiment"), "--data-dir", data,
                                     "--out-dir", ro / "runs", "--quick"],
    "tune": lambda ckpt, data, ro, side: ["tune", one_run_file(side, ckpt, "study"), "--data-dir", data,
                                    "--out-dir", ro / "t", "--trials", "1"],
    "report": lambda ckpt, data, ro, side: ["report", one_run(ckpt, data, side / "run"), "--out-dir", ro / "rep"],
}
