"""The command line through its real entry point (``python -m fmprune``), as a user runs it."""

import pytest

from support.entry_point import assert_user_error, decisions, fmprune, kill_minus_9_after


def test_an_input_too_small_for_the_model_is_one_line_and_no_warning():
    """Through a real process, where torch's warnings reach stderr too: nothing but the error line."""
    proc = fmprune("count", "--input-shape", "1,2,2", check=False)
    assert_user_error(proc, "lenet cannot be built", "at least 4x4")


def test_help_lists_every_command():
    out = fmprune("--help").stdout
    for command in ("data", "models", "criteria", "count", "train", "prune", "compare", "export"):
        assert command in out
    assert "--retrain-only-pruned-layer" in fmprune("prune", "--help").stdout


def test_count_prints_the_thesis_table():
    out = fmprune("count").stdout
    for figure in ("800", "51,200", "3,211,264", "10,240", "627,200", "10,035,200", "3,274,634"):
        assert figure in out
    assert "13,883,904" in out


def test_criteria_lists_the_registry():
    out = fmprune("criteria").stdout
    assert all(name in out for name in ("random", "min_weight", "mean_activation", "taylor"))


def test_train_then_prune_on_an_idx_dataset(idx_dir, tmp_path):
    ckpt = tmp_path / "m.pt"
    out = fmprune("train", "--data-dir", idx_dir, "--out", ckpt, "--epochs", 1, "--batch-size", 50).stdout
    assert "validation accuracy" in out and ckpt.is_file()
    run = tmp_path / "run"
    out = fmprune("prune", "--checkpoint", ckpt, "--data-dir", idx_dir, "--criterion", "min_weight",
                  "--scope", "conv2", "--steps", 5, "--run-dir", run).stdout
    assert "5 steps" in out
    assert len((run / "run.log").read_text().splitlines()) == 6
    assert "conv2" in fmprune("count", "--checkpoint", run / "model.pt").stdout


def test_compare_and_export_a_pruned_run(small_ckpt, idx_dir, tmp_path):
    run = tmp_path / "run"
    args = ("prune", "--checkpoint", small_ckpt, "--data-dir", idx_dir, "--steps", 20, "--run-dir", run)
    first, again = fmprune(*args).stdout, fmprune(*args).stdout
    assert "finished before" not in first and f"{run} holds this run, finished before: nothing done" in again
    assert first.splitlines()[-4:] == again.splitlines()[-4:]           # the same result, reported again
    out = fmprune("compare", run, "--data-dir", idx_dir, "--repeats", 3).stdout
    assert "from scratch" in out and (run / "compare.md").is_file() and (run / "compare.csv").is_file()
    assert "using from-scratch" in fmprune("compare", run, "--data-dir", idx_dir, "--repeats", 3).stdout
    out = fmprune("export", run, "--out-dir", tmp_path / "exp").stdout
    assert "model.pt2" in out and "model.onnx" in out


def test_missing_data_gives_one_line(tmp_path):
    assert_user_error(fmprune("data", "info", "--data-dir", tmp_path, check=False),
                      "missing file", "train-images-idx3-ubyte")


def test_wrong_magic_number_gives_one_line(idx_dir, tmp_path):
    import shutil
    d = tmp_path / "m"
    shutil.copytree(idx_dir, d)
    (d / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(100))
    assert_user_error(fmprune("data", "info", "--data-dir", d, check=False), "train-labels-idx1-ubyte", "magic")


def test_truncated_idx_file_gives_one_line(idx_dir, tmp_path):
    import shutil
    d = tmp_path / "t"
    shutil.copytree(idx_dir, d)
    f = d / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:5000])
    assert_user_error(fmprune("train", "--data-dir", d, "--out", tmp_path / "x.pt", check=False),
                      "t10k-images-idx3-ubyte", "truncated")


@pytest.mark.parametrize("args, fragments", [
    (["--criterion", "magic"], ["unknown criterion 'magic'"]),
    (["--scope", "fc2"], ["'fc2' is not prunable"]),
    (["--scope", "conv7"], ["unknown group 'conv7'"]),
    (["--min-accuracy", "1.5"], ["min accuracy"]),
    (["--maps-per-step", "0"], ["maps per step"]),
])
def test_bad_prune_arguments_give_one_line(small_ckpt, idx_dir, tmp_path, args, fragments):
    proc = fmprune("prune", "--checkpoint", small_ckpt, "--data-dir", idx_dir, "--run-dir", tmp_path / "r",
                   *args, check=False)
    assert_user_error(proc, *fragments)


def test_missing_and_corrupt_checkpoints_give_one_line(idx_dir, tmp_path):
    assert_user_error(fmprune("prune", "--checkpoint", tmp_path / "none.pt", "--data-dir", idx_dir,
                              "--run-dir", tmp_path / "r", check=False), "missing checkpoint file")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert_user_error(fmprune("export", bad, "--out-dir", tmp_path / "e", check=False), "not a readable checkpoint")


def test_kill_minus_9_then_resume_equals_an_uninterrupted_run(small_ckpt, idx_dir, tmp_path):
    args = ["prune", "--checkpoint", small_ckpt, "--data-dir", idx_dir, "--retrain", 10, "--save-every", 2,
            "--steps", 12]
    fmprune(*args, "--run-dir", tmp_path / "whole")
    run = tmp_path / "killed"
    kill_minus_9_after(args, run, steps=5, timeout=120)
    fmprune(*args, "--run-dir", run)
    assert decisions(run) == decisions(tmp_path / "whole")
    assert "Resumed at step" in (run / "run.log").read_text()
    log_steps = [line.rsplit("pruned: ", 1)[1] for line in (run / "run.log").read_text().splitlines()
                 if "pruned: " in line]
    assert log_steps == [str(i) for i in range(13)]
