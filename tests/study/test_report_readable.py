"""Reports a reader can trust: paper names in legends, units on axes, the 99 % floor where it
means something, quick runs marked as such, and no number where a run never got there."""

import json
from pathlib import Path

import pytest

from fmprune.study import report
from fmprune.study.experiments import load_experiment
from fmprune.study.legend import run_names, style_keys
from fmprune.study.report import discover, line_styles, plot_group, summary_rows, write_report
from support.run_dirs import write_run


def fake_run(root: Path, label: str, config: dict, accuracies: list[float], summary: dict | None = None) -> Path:
    """A run directory as the loop writes it: one step per accuracy, one map per step."""
    rows = [f"0,,,,{accuracies[0]},1000,5000,0"]
    rows += [f"{i},fc1,{i},0.1,{a},{1000 - 10 * i},{5000 - 40 * i},{i}" for i, a in enumerate(accuracies[1:], 1)]
    run = write_run(root / label, {"scope": "all", "eval_split": "val", **config}, rows)
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    return run


def fake_experiment(root: Path, runs: dict[str, tuple[dict, list[float]]], quick: bool = False) -> Path:
    root.mkdir(parents=True)
    (root / "experiment.json").write_text(json.dumps(
        {"name": root.name, "title": "Demo", "runs": list(runs), "quick": quick}))
    for label, (config, accuracies) in runs.items():
        fake_run(root, label, config, accuracies, {"stop_reason": "done"})
    return root


@pytest.fixture
def figures(monkeypatch):
    """The figures the report draws, kept open for inspection."""
    kept, close = [], report.plt.close
    monkeypatch.setattr(report.plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def test_runs_are_named_as_in_the_paper_and_only_by_what_differs():
    criteria = [{"criterion": c, "normalize": n} for n in ("none", "l2") for c in ("random", "taylor")]
    assert run_names(criteria, ["?"] * 4) == ["Random", "Taylor", "Random + L2", "Taylor + L2"]
    lam = [{"criterion": "taylor", "normalize": "l2", "flops_lambda": x, "device": d}
           for x, d in ((0.0, "cpu"), (0.001, "cuda:0"))]          # where it ran is no setting
    assert run_names(lam, ["a", "b"]) == ["no FLOPs term", "FLOPs λ = 0.001"]
    protocols = [{"retrain": r, "maps_per_step": k, "rank_once": once}
                 for r, k, once in ((0, 1, False), (100, 0.03, False), (100, 0.03, True))]
    assert run_names(protocols, ["a", "b", "c"]) == [
        "no retraining, 1 map per step", "retraining 100 it./step, 3% of maps per step",
        "retraining 100 it./step, 3% of maps per step, ranked once"]
    only = [{"retrain_only_pruned_layer": v} for v in (False, True)]   # "off" is named when needed
    assert run_names(only, ["a", "b"]) == ["whole network retrained", "pruned layer only retrained"]
    assert run_names([{"criterion": "taylor", "normalize": "l2"}], ["x"]) == ["Taylor + L2"]
    assert run_names([{"seed": 1}, {"seed": 1}], ["a", "b"]) == ["a", "b"]   # indistinguishable: directory names
    # colour per criterion, line style per normalisation
    styles = line_styles(style_keys(criteria))
    assert styles[0]["color"] == styles[2]["color"] != styles[1]["color"] and styles[0]["ls"] != styles[2]["ls"]


def test_figures_carry_paper_names_units_and_the_floor(tmp_path, figures):
    exp = fake_experiment(tmp_path / "exp", {
        "taylor+l2": ({"criterion": "taylor", "normalize": "l2"}, [0.995, 0.993, 0.985, 0.9]),
        "random+none": ({"criterion": "random", "normalize": "none"}, [0.995, 0.99, 0.97, 0.5]),
    })
    group = discover([exp])[0]
    plot_group(group, "maps", tmp_path / "f")
    plot_group(group, "params", tmp_path / "f")
    maps, params = (fig.axes[0] for fig in figures)
    labels = maps.get_legend_handles_labels()[1]
    assert labels[:2] == ["Taylor + L2", "Random"] and "99% floor (thesis)" in labels
    assert "base model 99.50%" in labels
    assert maps.get_xlabel() == "feature maps pruned (count)"
    assert maps.get_ylabel() == "validation accuracy (%)"
    assert maps.yaxis.get_major_formatter()(0.99, 0) == "99%"
    assert params.get_xlabel() == "remaining parameters (fraction of the base model, log scale)"
    assert params.get_xscale() == "log"


def test_the_floor_is_drawn_only_for_a_base_model_above_it(tmp_path, figures):
    exp = fake_experiment(tmp_path / "weak", {"taylor": ({"criterion": "taylor"}, [0.95, 0.9, 0.8])})
    plot_group(discover([exp])[0], "maps", tmp_path / "f")
    labels = figures[0].axes[0].get_legend_handles_labels()[1]
    assert not any("floor" in label for label in labels) and "base model 95.00%" in labels


def test_quick_reports_warn_on_top_and_never_invent_a_crossing(tmp_path, figures):
    exp = fake_experiment(tmp_path / "demo-quick", {
        "taylor": ({"criterion": "taylor", "steps": 6}, [0.995, 0.995, 0.994, 0.993, 0.993, 0.992, 0.992]),
        "random": ({"criterion": "random", "steps": 6}, [0.995, 0.99, 0.985, 0.98, 0.97, 0.96, 0.95]),
    }, quick=True)
    text = write_report([exp], tmp_path / "report").read_text()
    lines = text.splitlines()
    assert lines[0] == "# fmprune report"
    assert lines[2].startswith("> **Warning: quick mode: 6 steps, not the full experiment.**")
    assert "## Demo\n\n> **Warning: quick mode: 6 steps, not the full experiment.**" in text
    assert all("quick mode: 6 steps, not the full experiment" in f._suptitle.get_text() for f in figures)
    rows = {r["run"]: r for r in summary_rows(discover([exp])[0])}
    taylor, random = rows["Taylor"], rows["Random"]
    assert [taylor[f"maps before < {t}"] for t in ("99%", "98%", "90%")] == ["not reached"] * 3
    assert (taylor["params x at 99%"], taylor["MACs x at 99%"]) == ("not reached", "not reached")
    assert [random[f"maps before < {t}"] for t in ("99%", "98%", "90%")] == ["1", "3", "not reached"]
    assert random["params x at 99%"] == f"{1000 / 990:.1f}"
    full = tmp_path / "full"
    fake_experiment(full, {"taylor": ({"criterion": "taylor"}, [0.995, 0.98])})
    assert "Warning" not in write_report([full], tmp_path / "r2").read_text()


def test_a_run_stopped_by_its_floor_did_reach_it(tmp_path):
    run = fake_run(tmp_path / "e", "floor", {"criterion": "taylor", "min_accuracy": 0.99},
                   [0.995, 0.993, 0.991], {"stop_reason": "accuracy would fall under 0.99"})
    row = summary_rows(discover([run])[0])[0]
    assert (row["maps before < 99%"], row["maps before < 98%"]) == ("2", "not reached")


def test_quick_experiments_say_so(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('[experiment]\nname = "e"\n[axes]\ncriterion = ["random", "taylor"]\n')
    assert load_experiment(path, quick=True).quick_warning == "quick mode: 6 steps, not the full experiment"
    assert load_experiment(path).quick_warning == ""
