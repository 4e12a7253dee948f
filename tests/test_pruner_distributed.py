"""The Pruner under torchrun with 2 CPU processes (gloo): every rank removes the same maps as one
process that saw the same global batches, and ranks holding different models are refused."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("ddp_pruner_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: Path, *args: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    runner = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [runner, "--nnodes", "1", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_ddp_ranks_decide_as_one_process(tmp_path):
    single = tmp_path / "single.json"
    subprocess.run([sys.executable, str(WORKER), str(single)], check=True, timeout=300,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    done = torchrun(WORKER, str(tmp_path / "ddp.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    one = json.loads(single.read_text())
    ranks = [json.loads((tmp_path / f"ddp.json.{r}").read_text()) for r in range(2)]
    assert ranks[0]["removed"] == ranks[1]["removed"] == one["removed"]
    assert len(one["removed"]) == 3 and all(len(step) == 3 for step in one["removed"])
    assert ranks[0]["weights"] == ranks[1]["weights"]            # the ranks' models are identical
    assert ranks[0]["weights"] == pytest.approx(one["weights"], rel=1e-4, abs=1e-5)


def test_ranks_with_different_models_are_refused(tmp_path):
    done = torchrun(WORKER, str(tmp_path / "bad.json"), "--mismatch")
    assert done.returncode == 0, done.stderr[-2000:]
    for r in range(2):
        error = json.loads((tmp_path / f"bad.json.{r}").read_text())["error"]
        assert error.startswith("the ranks disagree on the model") and "\n" not in error


def test_the_classification_example_runs_under_torchrun(tmp_path):
    done = torchrun(ROOT / "examples" / "classification.py", "--iterations", "120", "--out", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"c.{r}").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] and len(ranks[0]["removed"]) == 3
    assert "test accuracy" in done.stdout
