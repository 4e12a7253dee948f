"""Every numeric option of every command is held to one rule table (``fmprune.validate``): NaN,
infinities and out-of-range values end in one line, exit status 2, nothing written. The cases
are found by walking the commands, so an option added later is covered without a test edit."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click
import pytest

from fmprune.cli import cli, main
from fmprune.validate import RULES, check_number, numeric_options, rule_for


def bad_values(name: str, integer: bool) -> list[str]:
    """Values ``name``'s rule refuses: never finite-less, and the nearest outside each bound."""
    rule = rule_for(name)
    values = [] if integer else ["nan", "inf", "-inf"]
    if rule.low is not None:
        values.append(str(int(rule.low)) if rule.low_open else str(int(rule.low) - 1))
    if rule.high is not None and not integer:
        values.append(str(rule.high) if rule.high_open else str(rule.high + 1))
    return values


def cases() -> list:
    found = []
    for path, param in numeric_options(cli):
        if not isinstance(param, click.Option):
            continue
        integer = isinstance(param.type, click.types.IntParamType)
        for value in bad_values(param.name, integer):
            found.append(pytest.param(path, param.opts[0], value, id=f"{path.replace(' ', '-')}{param.opts[0]}={value}"))
    return found


def required_arguments(path: str) -> list[str]:
    command = cli
    for part in path.split():
        command = command.commands[part]
    return ["x" for p in command.params if isinstance(p, click.Argument) and p.required]


def run(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["fmprune", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_the_walk_finds_the_options_the_issue_named():
    names = {(path, p.name) for path, p in numeric_options(cli)}
    for wanted in [("prune", "flops_lambda"), ("train", "lr"), ("train", "weight_decay"), ("count", "num_classes"),
                   ("score", "qw"), ("sweep", "workers"), ("sensitivity", "max_drop"), ("compare", "repeats"),
                   ("prune", "maps_per_step"), ("quantize", "retrain_lr"), ("oneshot", "retrain_lr")]:
        assert wanted in names


@pytest.mark.parametrize("path,option,value", cases())
def test_an_invalid_number_is_one_line_and_writes_nothing(path, option, value, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = [*path.split(), f"{option}={value}", *required_arguments(path)]
    code, err = run(args, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("fmprune: error: "), (args, err)
    assert option in lines[0], lines[0]
    assert "Traceback" not in err
    assert [p for p in tmp_path.rglob("*") if p.name != "home"] == []


@pytest.mark.parametrize("name", sorted(RULES) + ["seed", "flops_lambda"])
def test_every_rule_refuses_nan_and_infinity(name):
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(Exception, match=name.replace("_", " ")):
            check_number(name, value)


def test_an_experiment_file_is_held_to_the_same_rules(tmp_path, monkeypatch, capsys):
    experiment = tmp_path / "nan.toml"
    experiment.write_text('[experiment]\nname = "x"\n[settings]\nflops_lambda = nan\n'
                          '[axes]\ncriterion = ["min_weight"]\n')
    monkeypatch.chdir(tmp_path)
    code, err = run(["sweep", str(experiment)], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "flops lambda must be a number >= 0, got nan" in lines[0], err
    assert not Path(tmp_path, "runs").exists()


def test_a_training_output_that_is_a_directory_is_refused_before_training(tmp_path, monkeypatch, capsys):
    code, err = run(["train", "--out", str(tmp_path), "--data-dir", str(tmp_path / "none")], monkeypatch, capsys)
    assert code == 2 and "--out" in err and "is a directory" in err, err
