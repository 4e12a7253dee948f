"""Every user error, through the real entry point ``fmprune.cli:main``, in one place.

Each case must end with one line ``fmprune: error: ...`` that names the problem (and, checked
separately, says what to do), a non-zero exit status, no traceback, and every file that was on
disk before (checkpoints, data, run directories, the cache) byte for byte as it was.

Cases whose message comes from code being rewritten (``run/``) and does not yet say what to do
are strict xfails that spell out the wanted text: when the message arrives they fail loudly, so
the marker is removed rather than forgotten.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from support.fixture_data import write_idx_dataset
from fmprune.cli import main
from fmprune.models import LeNet
from fmprune.run.checkpoint import load_checkpoint, save_checkpoint
from support.entry_point import run_cli


@dataclass
class Workspace:
    """Files the cases point at; ``shared`` is built once per module, ``tmp`` per case."""

    shared: Path
    tmp: Path
    data: Path

    def __getattr__(self, name: str) -> Path:   # ws.ckpt -> shared/ckpt.pt and so on
        return self.shared / FILES[name]


FILES = {"ckpt": "ckpt.pt", "weak": "weak.pt", "garbage": "garbage.pt", "truncated": "truncated.pt",
         "plain": "plain.pt", "counts": "counts.pt", "arch": "arch.pt", "other_data": "other-data",
         "finished": "finished", "bad_toml": "bad.toml", "magic_toml": "magic.toml"}
STEPS = 2   # the finished run's --steps
UNKNOWN_MODEL = "nosuchnet"


def prune(ws: Workspace, *args, checkpoint: Path | None = None, run_dir: Path | None = None) -> list:
    return ["prune", "--checkpoint", checkpoint or ws.ckpt, "--data-dir", ws.data,
            "--run-dir", run_dir or ws.tmp / "run", *map(str, args)]


def finished_again(ws: Workspace, *args, checkpoint: Path | None = None) -> list:
    """The finished run's command, changed by ``args``, on its run directory."""
    return prune(ws, "--steps", STEPS, "--criterion", "min_weight", *args, checkpoint=checkpoint,
                 run_dir=ws.finished)


def rename_model(ckpt) -> None:
    """Make ``ckpt`` a checkpoint of an architecture this installation does not know."""
    if hasattr(ckpt, "model_spec"):
        ckpt.model_spec = {**ckpt.model_spec, "name": UNKNOWN_MODEL}
    else:   # the first checkpoint format named the architecture alone
        ckpt.arch = UNKNOWN_MODEL


@pytest.fixture(scope="module")
def shared(small_ckpt, idx_dir, tmp_path_factory) -> Path:
    """Checkpoints good, damaged and foreign, other data, experiment files, a finished run."""
    d = tmp_path_factory.mktemp("errors")
    shutil.copy(small_ckpt, d / FILES["ckpt"])
    raw = Path(small_ckpt).read_bytes()
    (d / FILES["garbage"]).write_bytes(b"this is not a checkpoint")
    (d / FILES["truncated"]).write_bytes(raw[:len(raw) // 2])
    torch.save(load_checkpoint(small_ckpt).state_dict, d / FILES["plain"])   # weights of another tool
    variants = {   # a checkpoint whose description does not fit its weights, and an unknown model
        "counts": lambda c: setattr(c, "state_dict", LeNet(widths=(6, 8, 20)).state_dict()),
        "arch": rename_model,
        "weak": lambda c: c.state_dict["fc2.bias"].__setitem__(0, 50.0),   # predicts 0: low accuracy
    }
    for name, change in variants.items():
        ckpt = load_checkpoint(small_ckpt)
        change(ckpt)
        save_checkpoint(ckpt, d / FILES[name])
    write_idx_dataset(d / FILES["other_data"], n_train=600, n_test=100)
    (d / FILES["bad_toml"]).write_text('[experiment]\nname = "x"\n[axes]\ncritrion = ["taylor"]\n')
    (d / FILES["magic_toml"]).write_text('[experiment]\nname = "x"\n[axes]\ncriterion = ["magic"]\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["fmprune", *map(str, finished_again(Workspace(d, d, idx_dir)))])
        main()   # returns normally on success
    assert (d / FILES["finished"] / "summary.json").is_file()
    return d


@pytest.fixture
def ws(shared, idx_dir, tmp_path) -> Workspace:
    return Workspace(shared, tmp_path, idx_dir)


def copy_of_finished(ws: Workspace, name: str) -> Path:
    target = ws.tmp / name
    shutil.copytree(ws.finished, target)
    return target


def damaged_data(ws: Workspace, file: str, damage: Callable[[bytes], bytes]) -> Path:
    d = ws.tmp / "data"
    shutil.copytree(ws.data, d)
    (d / file).write_bytes(damage((d / file).read_bytes()))
    return d


def unfinished_with_bad_state(ws: Workspace) -> Path:
    run = copy_of_finished(ws, "resumable")
    (run / "summary.json").unlink()
    (run / "state.pt").write_bytes(b"half a state")
    return run


@dataclass
class Case:
    """``args(ws)`` fails with one line holding ``problem``; ``hint`` says what to do.
    ``todo``: the part of the wanted behaviour not there yet ("hint", or "all" when even the exit
    status is wrong), with the wanted message, for whoever owns the code that raises it."""

    id: str
    args: Callable[[Workspace], list]
    problem: list[str]
    hint: list[str] = field(default_factory=list)
    todo: tuple[str, str] | None = None


EXITING_FACTORY = b"import sys\n\n\ndef make(num_classes=10):\n    sys.exit(0)\n"
WHEN_MISSING = "fmprune train"   # what to do about a missing or unusable checkpoint
CASES = [
    # checkpoints: missing, corrupt, from another tool, another configuration, another model, other data
    Case("checkpoint-missing", lambda ws: prune(ws, checkpoint=ws.tmp / "none.pt"),
         ["none.pt", "missing checkpoint file"], [WHEN_MISSING]),
    Case("checkpoint-garbage", lambda ws: prune(ws, checkpoint=ws.garbage),
         ["garbage.pt", "not a readable checkpoint"], [WHEN_MISSING]),
    Case("checkpoint-truncated", lambda ws: ["count", "--checkpoint", ws.truncated],
         ["truncated.pt", "not a readable checkpoint"], [WHEN_MISSING]),
    Case("checkpoint-of-another-tool", lambda ws: ["export", ws.plain, "--out-dir", ws.tmp / "e"],
         ["plain.pt", "not an fmprune checkpoint"], [WHEN_MISSING]),
    Case("checkpoint-of-another-configuration", lambda ws: prune(ws, checkpoint=ws.counts),
         ["checkpoint weights do not fit"], ["counts.pt", "fc1"]),
    Case("checkpoint-of-another-model", lambda ws: prune(ws, checkpoint=ws.arch),
         [UNKNOWN_MODEL], ["available: ", "arch.pt"]),
    Case("checkpoint-trained-on-other-data", lambda ws: prune(ws) + ["--data-dir", ws.other_data],
         ["trained on other data"], ["--data-dir"]),
    # data: missing, corrupt
    Case("data-missing-directory", lambda ws: ["data", "info", "--data-dir", ws.tmp / "nodata"],
         ["nodata", "missing file or directory"], ["--data-dir takes"]),
    Case("data-missing-file", lambda ws: ["data", "info", "--data-dir", ws.tmp],
         ["train-images-idx3-ubyte", "missing file"], ["four MNIST IDX files"]),
    Case("data-wrong-magic", lambda ws: ["data", "info", "--data-dir", damaged_data(
        ws, "train-labels-idx1-ubyte", lambda b: b"\x00\x00\x08\x09" + b[4:])],
        ["train-labels-idx1-ubyte", "wrong magic number"], ["not an MNIST-format IDX file"]),
    Case("data-truncated", lambda ws: ["train", "--out", ws.tmp / "m.pt", "--data-dir", damaged_data(
        ws, "t10k-images-idx3-ubyte", lambda b: b[:5000])],
        ["t10k-images-idx3-ubyte", "truncated file"], ["intact copy"]),
    Case("data-corrupt-gzip", lambda ws: ["data", "info", "--data-dir", write(ws.tmp / "m.pkl.gz", b"\x1f\x8bxx")],
         ["m.pkl.gz", "corrupt gzip data"], ["intact copy"]),
    Case("data-corrupt-pickle", lambda ws: ["data", "info", "--data-dir", write(ws.tmp / "m.pkl", b"nonsense")],
         ["m.pkl", "not a valid mnist.pkl.gz"], ["pass the classic mnist.pkl.gz"]),
    Case("data-cache-checksum", lambda ws: ["data", "info"] if write(ws.tmp / "home" / "mnist.pkl.gz", b"x") else [],
         ["mnist.pkl.gz", "checksum mismatch"], ["delete it to fetch again"]),
    # names: criterion, normalisation, scope, split, device, experiment files
    Case("unknown-criterion", lambda ws: prune(ws, "--criterion", "magic"),
         ["unknown criterion 'magic'"], ["available: ", "random", "taylor"]),
    Case("unknown-normalisation", lambda ws: prune(ws, "--normalize", "l7"),
         ["--normalize", "'l7' is not one of 'none', 'l1', 'l2'"], ["prune --help"]),
    Case("unknown-scope", lambda ws: prune(ws, "--scope", "conv9"),
         ["'conv9'"], ["conv1, conv2, fc1"]),
    Case("classifier-scope", lambda ws: prune(ws, "--scope", "fc2"),
         ["'fc2'", "prun"], ["conv1, conv2, fc1"]),
    Case("unknown-eval-split", lambda ws: prune(ws, "--eval-split", "train"),
         ["--eval-split", "'train' is not one of"], ["--help"]),
    Case("unknown-runtime", lambda ws: ["compare", ws.ckpt, "--runtime", "eager,tvm", "--no-scratch"],
         ["unknown runtime 'tvm'"], ["known: eager"]),
    Case("empty-runtime", lambda ws: ["compare", ws.ckpt, "--runtime", ",", "--no-scratch"],
         ["--runtime ',' names no runtime"], ["all"]),
    Case("unknown-device", lambda ws: prune(ws, "--device", "tpu"),
         ["unknown device 'tpu'"], ["cpu, cuda or cuda:N"]),
    Case("experiment-unknown-key", lambda ws: ["sweep", ws.bad_toml, "--data-dir", ws.data],
         ["bad.toml", "unknown key 'axes.critrion'"], ["known: "]),
    Case("experiment-unknown-criterion", lambda ws: ["sweep", ws.magic_toml, "--data-dir", ws.data],
         ["magic.toml", "unknown criterion 'magic'"], ["available: "]),
    # impossible targets and sizes
    Case("min-accuracy-above-one", lambda ws: prune(ws, "--min-accuracy", "1.5"),
         ["min accuracy", "1.5"], ["fraction in (0, 1]"]),
    Case("target-params-zero", lambda ws: prune(ws, "--target-params", "0"),
         ["target params", "0.0"], ["fraction in (0, 1]"]),
    Case("target-macs-above-one", lambda ws: prune(ws, "--target-macs", "2"),
         ["target macs", "2.0"], ["fraction in (0, 1]"]),
    Case("maps-per-step-fractional-above-one", lambda ws: prune(ws, "--maps-per-step", "2.5"),
         ["maps per step", "2.5"], ["positive integer or a fraction in (0, 1)"]),
    Case("calibration-larger-than-training-split", lambda ws: prune(ws, "--calibration", "100000"),
         ["calibration size 100000", "exceeds"], ["1100 training images"]),
    Case("pruned-layer-only-without-retraining", lambda ws: prune(ws, "--retrain-only-pruned-layer"),
         ["--retrain-only-pruned-layer"], ["needs --retrain N"]),
    Case("train-zero-epochs", lambda ws: ["train", "--epochs", "0", "--out", ws.tmp / "m.pt", "--data-dir", ws.data],
         ["--epochs", "0 is not in the range x>=1"], ["train --help"]),
    Case("train-batch-larger-than-data", lambda ws: ["train", "--batch-size", "100000", "--out", ws.tmp / "m.pt",
                                                     "--data-dir", ws.data],
         ["--batch-size 100000", "larger than the 1,100 training images"], ["choose a smaller one"]),
    Case("min-accuracy-above-the-base-model", lambda ws: prune(ws, "--min-accuracy", "0.9", checkpoint=ws.weak),
         ["--min-accuracy 0.9", "base"], ["nothing can be pruned"]),
    Case("target-below-the-smallest-model", lambda ws: prune(ws, "--target-params", "0.001", "--maps-per-step", "0.5"),
         ["--target-params 0.001", "smallest"], ["one map per layer"]),
    # run directories: finished, another configuration, another base checkpoint, damaged state, a file
    Case("quantize-into-a-pruning-run", lambda ws: ["quantize", ws.ckpt, "--data-dir", ws.data, "--run-dir",
                                                    copy_of_finished(ws, "pruned")],
         ["pruned", "holds a prune run, not a quantize run"], ["use another --run-dir"]),
    Case("quantize-other-bits-into-a-quantisation-run",
         lambda ws: ["quantize", ws.ckpt, "--bits", "4", "--fake", "--data-dir", ws.data, "--run-dir",
                     write(ws.tmp / "int8" / "quantize.json", b'{"config": {"mode": "ptq"}, "source": "x"}').parent],
         ["int8", "holds a quantisation with other settings"], ["use another --run-dir"]),
    Case("prune-into-a-quantisation-run",
         lambda ws: prune(ws, run_dir=write(ws.tmp / "q" / "quantize.json", b"{}").parent),
         ["holds a quantize run, not a prune run"], ["use another --run-dir"]),
    Case("run-directory-other-configuration", lambda ws: finished_again(ws, "--steps", 3),
         ["finished", "different configuration"], ["use another --run-dir"]),
    Case("run-directory-other-base-checkpoint",
         lambda ws: finished_again(ws, checkpoint=ws.weak), ["another base checkpoint"], ["use another --run-dir"]),
    Case("run-directory-damaged-state",
         lambda ws: finished_again(ws, "--run-dir", unfinished_with_bad_state(ws)),
         ["state.pt", "unreadable resume state"], ["delete"]),
    Case("run-directory-is-a-file", lambda ws: prune(ws, run_dir=write(ws.tmp / "f", b"x")),
         ["--run-dir", "exists and is not a directory"], ["choose another path"]),
    Case("export-directory-is-a-file", lambda ws: ["export", ws.ckpt, "--out-dir", write(ws.tmp / "f", b"x")],
         ["--out-dir", "exists and is not a directory"], ["choose another path"]),
    Case("count-input-the-model-cannot-take", lambda ws: ["count", "--input-shape", "1,2,2"],
         ["lenet cannot be built", "at least 4x4", "got 2x2"]),
    Case("factory-calling-sys-exit", lambda ws: [
        "count", "--model", f"{write(ws.tmp / 'f.py', EXITING_FACTORY)}:make",
        "--input-shape", "1,28,28"], ["cannot be built: it called sys.exit(0)"]),
    Case("report-without-runs", lambda ws: ["report", ws.tmp, "--out-dir", ws.tmp / "report"],
         ["no run directories"], ["config.json + steps.csv"]),
]


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def snapshot(*roots: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def run_case(case: Case, ws: Workspace, monkeypatch, capsys) -> str:
    """Run one case; check the exit status, the single error line and the files; return the line."""
    args = case.args(ws)                       # may prepare damaged files in ws.tmp
    before = snapshot(ws.shared, ws.data, ws.tmp)
    code, out, err = run_cli(args, monkeypatch, capsys)
    after = snapshot(ws.shared, ws.data, ws.tmp)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("fmprune: error: ")]
    assert code != 0 and len(errors) == 1 and lines[-1] == errors[0], (code, err)
    assert {p: after.get(p) for p in before} == before, "a file that was on disk changed or went"
    for fragment in case.problem:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def marks(case: Case, part: str) -> list:
    if case.todo and (case.todo[0] == "all" or part == "hint"):
        return [pytest.mark.xfail(strict=True, reason=f"wanted: {case.todo[1]}")]
    return []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=marks(c, "problem")) for c in CASES])
def test_one_line_exit_status_and_nothing_overwritten(case, ws, monkeypatch, capsys):
    run_case(case, ws, monkeypatch, capsys)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=marks(c, "hint")) for c in CASES if c.hint])
def test_the_line_says_what_to_do(case, ws, monkeypatch, capsys):
    line = run_case(case, ws, monkeypatch, capsys)
    for fragment in case.hint:
        assert fragment in line, (fragment, line)


def test_a_finished_run_run_again_prints_its_result_and_changes_nothing(ws, monkeypatch, capsys):
    """A second ./run.sh: the same command on the same run directory is not an error."""
    run = copy_of_finished(ws, "again")
    before = snapshot(run)
    code, out, err = run_cli(finished_again(ws, "--run-dir", run, "--quiet"), monkeypatch, capsys)
    assert code == 0, err
    assert f"{STEPS} steps" in out and "accuracy" in out and f"run directory: {run}" in out
    assert snapshot(run) == before


def test_a_sweep_never_overwrites_a_finished_run_of_other_settings(ws, monkeypatch, capsys):
    """The run's own line names the problem; the command ends with one error line and status 2."""
    experiment = write(ws.tmp / "x.toml", b'[experiment]\nname = "x"\n[settings]\nsteps = 3\n'
                                          b'[axes]\ncriterion = ["min_weight"]\n')
    copy_of_finished(ws, "out/x/min_weight")
    before = snapshot(ws.tmp)
    code, out, err = run_cli(["sweep", experiment, "--out-dir", ws.tmp / "out", "--checkpoint", ws.ckpt,
                              "--data-dir", ws.data], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines()[-1] == "fmprune: error: 1 run(s) failed: min_weight"
    assert "holds a finished run with other settings; move it away or rename the experiment" in out
    after = snapshot(ws.tmp)
    assert {p: after.get(p) for p in before} == before


def test_a_finished_run_directory_given_as_checkpoint_is_its_model(ws, monkeypatch, capsys):
    """Every command taking a checkpoint takes a run directory for its model.pt (prune went on
    to say "missing checkpoint file" and suggest an option compare and score do not have)."""
    run = copy_of_finished(ws, "as-base")
    code, out, err = run_cli(prune(ws, "--steps", "1", "--criterion", "min_weight", "--quiet",
                                   checkpoint=run, run_dir=ws.tmp / "further"), monkeypatch, capsys)
    assert code == 0, err
    config = json.loads((ws.tmp / "further" / "config.json").read_text())
    assert config["base_checkpoint"] == str(run / "model.pt") and config["base_checkpoint_sha256"]
    code, _, err = run_cli(["compare", ws.tmp / "missing.pt", "--data-dir", ws.data], monkeypatch, capsys)
    assert code == 2 and "--checkpoint" not in err and "fmprune train" in err, err
