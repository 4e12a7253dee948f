"""Experiment files, sweeps (parallel, resumable, failure-tolerant) and reports."""

from pathlib import Path

import pytest

from fmprune.errors import FmpruneError
from fmprune.study.experiments import load_experiment
from fmprune.study.report import X_AXES, read_curve, summary_rows, write_report
from fmprune.study.sweep import run_sweep
from support.paths import ROOT
from support.run_dirs import write_run

SHIPPED = sorted((ROOT / "experiments").glob("*.toml"))


def write(tmp_path, text, name="e.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_axes_and_variants_combine_into_labelled_runs(tmp_path):
    e = load_experiment(write(tmp_path, """
[experiment]
name = "demo"
[settings]
scope = "conv2"
[axes]
criterion = ["random", "taylor"]
normalize = ["none", "l2"]
[[runs]]
retrain = 0
[[runs]]
retrain = 5
"""))
    assert len(e.runs) == 8 and e.varying == ["criterion", "normalize", "retrain"]
    labels = [label for label, _ in e.runs]
    assert labels[:2] == ["random+none+retrain0", "random+none+retrain5"]
    assert all(c.scope == "conv2" for _, c in e.runs)


@pytest.mark.parametrize("text, message", [
    ('[experiment]\nname="x"\n[axes]\ncritrion=["taylor"]', "unknown key 'axes.critrion'"),
    ('[experiment]\nname="x"\n[settings]\nretrain="ten"', "'settings.retrain' = 'ten' should be int"),
    ('[experiment]\nname="x"\n[axes]\ncriterion="taylor"', "'axes.criterion' must be a non-empty list"),
    ('[experiment]\nname="x"\n[axes]\ncriterion=["magic"]', "unknown criterion 'magic'"),
    ('[experiment]\ntitle="no name"', "'experiment.name' is required"),
    ('[experiment]\nname="x"\n[setings]\nscope="all"', "unknown key 'top level.setings'"),
    ('[experiment\nname="x"', "not valid TOML"),
    ('[experiment]\nname="x"\n[settings]\nrank_once=1', "'settings.rank_once' = 1 should be bool"),
    ('[experiment]\nname="x"\n[train]\nlr=nan', "'train.lr': lr must be a positive number, got nan"),
    ('[experiment]\nname="x"\n[train]\nmax_iters=-5', "'train.max_iters': max iters must be a positive number, got -5"),
    ('[experiment]\nname="x"\n[settings]\nflops_lambda=nan', "flops lambda must be a number >= 0, got nan"),
])
def test_bad_experiment_files_name_the_bad_key(tmp_path, text, message):
    with pytest.raises(FmpruneError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_experiment(write(tmp_path, text))


# shipped files that cannot run on the test's tiny LeNet and synthetic digits, and why
NOT_ON_THE_TINY_LENET = {
    "10-fc-weight-vs-unit": "its unit amounts (up to 0.99) would empty a layer of the test's 6-map LeNet",
    "12-lenet-unit-pruning": "its unit amounts (up to 0.97) would empty a layer of the test's 6-map LeNet",
    "30-lab-recipe": "it trains its own ResNet on CIFAR-10 (its own checkpoint and data)",
    "31-lab-recipe-mnist3x32": "it trains its own ResNet-20 on MNIST 3x32x32 (its own checkpoint and data)",
}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_experiment_runs_quick(path, small_ckpt, idx_dir, tmp_path):
    if path.stem in NOT_ON_THE_TINY_LENET:
        pytest.skip(NOT_ON_THE_TINY_LENET[path.stem])
    experiment = load_experiment(path, quick=True)
    outcomes = run_sweep(experiment, str(small_ckpt), tmp_path, str(idx_dir), workers=2, quick=True)
    failed = [(o.label, o.message) for o in outcomes if o.status != "done"]
    assert not failed
    assert len(outcomes) == len(experiment.runs) + bool(experiment.then and experiment.then_base)  # + base steps
    report = write_report([tmp_path], tmp_path / "report")
    text = report.read_text()
    if experiment.then:   # follow-up steps score every result: the accuracy-against-score figure
        assert "figures/accuracy-vs-score.png" in text
    if experiment.kind == "prune":   # accuracy after every step: one figure per x axis
        assert text.count(f"](figures/{experiment.name}-accuracy-vs-") == len(X_AXES) == 4
        assert experiment.title in text
        assert (tmp_path / "report" / "figures" / f"{experiment.name}-accuracy-vs-maps.svg").is_file()


def test_sweep_skips_finished_runs_resumes_and_reports_failures(small_ckpt, idx_dir, tmp_path):
    path = write(tmp_path, """
[experiment]
name = "mixed"
[settings]
steps = 3
calibration = 100
[axes]
scope = ["conv1", "conv2"]
""")
    first = run_sweep(load_experiment(path), str(small_ckpt), tmp_path / "out", str(idx_dir), workers=2)
    assert sorted(o.status for o in first) == ["done", "done"]
    # one run made unfinished (as if interrupted), and a new run that must fail
    (tmp_path / "out" / "mixed" / "conv2" / "summary.json").unlink()
    path.write_text(path.read_text().replace('["conv1", "conv2"]', '["conv1", "conv2", "conv9"]'))
    second = run_sweep(load_experiment(path), str(small_ckpt), tmp_path / "out", str(idx_dir), workers=2)
    status = {o.label: o.status for o in second}
    assert status == {"conv1": "skipped", "conv2": "done", "conv9": "failed"}
    assert "unknown group 'conv9'" in next(o.message for o in second if o.label == "conv9")


def test_same_file_and_seed_give_the_same_steps(small_ckpt, idx_dir, tmp_path):
    path = write(tmp_path, '[experiment]\nname="r"\n[settings]\nsteps=4\nretrain=3\ncalibration=100\n'
                           '[axes]\ncriterion=["random","taylor"]\n')
    for out in ("a", "b"):
        run_sweep(load_experiment(path), str(small_ckpt), tmp_path / out, str(idx_dir), workers=2)
    for label in ("random", "taylor"):
        rows = [read_curve(tmp_path / out / "r" / label) for out in ("a", "b")]
        assert rows[0].accuracy == rows[1].accuracy and rows[0].params == rows[1].params


def test_summary_counts_maps_before_each_threshold(tmp_path):
    run = write_run(tmp_path / "run", {"scope": "all", "eval_split": "val"}, [
        "0,,,,0.995,100,1000,0", "1,fc1,3,0.1,0.992,90,900,1", "2,fc1,4,0.2,0.985,80,800,2",
        "2,conv1,1,0.2,0.985,70,700,2", "3,fc1,5,0.3,0.95,60,600,3", "4,fc1,6,0.3,0.89,50,500,4"])
    row = summary_rows(type("G", (), {"curves": [read_curve(run)]})())[0]
    assert (row["maps before < 99%"], row["maps before < 98%"], row["maps before < 90%"]) == ("1", "3", "4")
    assert row["maps pruned"] == "5" and row["params x"] == "2.0" and row["status"] == "unfinished"
    assert (row["params x at 99%"], row["MACs x at 99%"]) == ("1.1", "1.1")   # step 1: 90 params, 900 MACs
    assert read_curve(run).reduction_at(0.996) is None                       # the base is already under it


def test_report_refuses_directories_without_runs(tmp_path):
    with pytest.raises(FmpruneError, match="no run directories"):
        write_report([tmp_path], tmp_path / "r")


def test_line_styles_colour_by_criterion_and_style_by_the_rest():
    from fmprune.study.report import line_styles
    labels = [f"{c}, {n}" for n in ("none", "l1", "l2") for c in ("random", "min_weight", "mean_activation", "taylor")]
    styles = line_styles(labels)
    assert len({(s["color"], str(s["ls"])) for s in styles}) == 12          # every line distinct
    assert styles[0]["color"] == styles[4]["color"] == styles[8]["color"]   # random: one colour
    assert len({str(s["ls"]) for s in styles[:4]}) == 1                     # none: one style
    many = line_styles([f"run{i}" for i in range(14)])
    assert len({(str(s["color"]), str(s["ls"])) for s in many}) == 14


def fake_experiment(root: Path, title: str, config: dict) -> Path:
    write_run(root / "run", config, ["0,,,,0.995,100,1000,0", "1,fc1,3,0.1,0.992,90,900,1"])
    (root / "experiment.json").write_text(f'{{"name": "{root.name}", "title": "{title}", "runs": ["run"]}}')
    return root


def test_report_keeps_the_order_given_and_says_where_runs_ran(tmp_path):
    later = fake_experiment(tmp_path / "a-exp", "Alpha", {"scope": "all"})
    first = fake_experiment(tmp_path / "b-exp", "Beta",
                            {"scope": "all", "device": "cuda:0 (GPU)", "torch_version": "2.11.0"})
    text = write_report([first, later], tmp_path / "report").read_text()
    assert text.index("## Beta") < text.index("## Alpha")
    assert "Ran on cuda:0 (GPU), torch 2.11.0" in text
    assert "Ran on cpu, torch unknown" in text


def test_the_same_runs_give_byte_identical_figures(tmp_path):
    """No date stamp or random element ids: a regenerated report changes only where runs did."""
    runs = fake_experiment(tmp_path / "exp", "Same", {"scope": "all"})
    first, second = (write_report([runs], tmp_path / out).parent / "figures" for out in ("a", "b"))
    names = sorted(p.name for p in first.iterdir())
    assert any(n.endswith(".svg") for n in names) and any(n.endswith(".png") for n in names)
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
