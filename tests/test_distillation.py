"""Retraining with the unpruned model as teacher: the loss against hand computations, the frozen
copy, training pulling a student to its teacher, and the option through a pruning run and the CLI."""

import json
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from fmprune import Distillation, distillation_loss
from fmprune import distillation
from fmprune.cli import cli, main
from fmprune.data import Split
from fmprune.errors import FmpruneError
from fmprune.run.checkpoint import load_checkpoint
from fmprune.run.loop import PruneConfig, run_pruning
from fmprune.training import BatchStream, fine_tune


def test_loss_is_the_weighted_sum_written_out_by_hand():
    logits, teacher, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    hard = math.log(1 + math.exp(-2.0))                 # -log softmax(2, 0)[0]
    p = [1 / (1 + math.exp(1 / 3)), 1 / (1 + math.exp(-1 / 3))]      # teacher at T = 3: softmax(0, 1/3)
    q = [1 / (1 + math.exp(-2 / 3)), 1 / (1 + math.exp(2 / 3))]      # student at T = 3: softmax(2/3, 0)
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    got = distillation_loss(logits, teacher, labels, weight=0.25, temperature=3.0)
    assert got.item() == pytest.approx(0.75 * hard + 0.25 * 9 * kl, rel=1e-6)


def test_weight_zero_is_the_cross_entropy_and_a_student_equal_to_its_teacher_pays_only_for_labels():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    ce = F.cross_entropy(logits, labels)
    assert torch.equal(distillation_loss(logits, torch.randn(8, 5), labels, weight=0.0), ce)
    assert distillation_loss(logits, logits.clone(), labels, weight=0.5).item() == pytest.approx(0.5 * ce.item(),
                                                                                               abs=1e-6)


@pytest.mark.parametrize("weight, temperature, match", [(1.5, 4.0, "weight"), (-0.1, 4.0, "weight"),
                                                         (0.5, 0.0, "temperature")])
def test_bad_weight_or_temperature_is_refused_everywhere(weight, temperature, match):
    x = torch.zeros(1, 2)
    with pytest.raises(FmpruneError, match=match):
        distillation_loss(x, x, torch.tensor([0]), weight=weight, temperature=temperature)
    with pytest.raises(FmpruneError, match=match):
        Distillation(nn.Linear(2, 2), weight, temperature)
    with pytest.raises(FmpruneError, match="distill"):
        PruneConfig(distill=weight, distill_temperature=temperature)


def test_the_teacher_is_a_frozen_copy():
    model = nn.Linear(3, 2)
    distill = Distillation.of(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(distill.teacher.weight, model.weight)
    assert not any(p.requires_grad for p in distill.teacher.parameters()) and not distill.teacher.training


def test_retraining_with_weight_one_pulls_the_student_to_its_teacher():
    """Labels and teacher disagree on purpose: weight 1 follows the teacher, weight 0 the labels."""
    torch.manual_seed(0)
    images = torch.randn(256, 4)
    teacher = nn.Linear(4, 3)
    labels = torch.zeros(256, dtype=torch.long)          # every label class 0, the teacher mostly not
    split = Split(images, labels)

    def trained(weight: float) -> nn.Module:
        student = nn.Linear(4, 3)
        torch.manual_seed(1)
        optimizer = torch.optim.Adam(student.parameters(), lr=0.05)
        fine_tune(student, BatchStream(split, 64, 0), optimizer, 200,
                  distill=Distillation(teacher, weight, 1.0))
        return student

    taught, labelled = trained(1.0), trained(0.0)
    with torch.no_grad():
        target = teacher(images).argmax(1)
        follows_teacher = (taught(images).argmax(1) == target).float().mean().item()
        follows_labels = (labelled(images).argmax(1) == target).float().mean().item()
    assert follows_teacher > 0.9 and follows_labels == pytest.approx((target == 0).float().mean().item())


def test_a_pruning_run_retrains_with_its_unpruned_base_model_as_teacher(small_ckpt, splits, tmp_path, monkeypatch):
    """Every retraining and final-tuning update goes through the distillation loss, with the
    unpruned model (fc1: all 24 units) as teacher while the student has lost maps; the same run
    without it tunes to other weights."""
    seen = []
    loss = Distillation.loss

    def spy(self, logits, images, labels):
        frozen = not self.teacher.training and not any(p.requires_grad for p in self.teacher.parameters())
        seen.append((self.teacher.fc1.out_features, frozen, self.weight, self.temperature))
        return loss(self, logits, images, labels)

    monkeypatch.setattr(distillation.Distillation, "loss", spy)
    common = dict(criterion="taylor", scope="fc1", maps_per_step=4, steps=2, retrain=3, final_tune=20, seed=3)
    plain = run_pruning(small_ckpt, splits, PruneConfig(**common), tmp_path / "plain")
    assert seen == []
    taught = run_pruning(small_ckpt, splits, PruneConfig(**common, distill=0.7, distill_temperature=2.0),
                         tmp_path / "taught")
    assert seen == [(24, True, 0.7, 2.0)] * (2 * 3 + 20)
    assert json.loads((tmp_path / "taught" / "config.json").read_text())["distill"] == 0.7
    a = load_checkpoint(tmp_path / "plain" / "model.pt").build().state_dict()
    b = load_checkpoint(tmp_path / "taught" / "model.pt").build().state_dict()
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    assert plain.steps == taught.steps == 2


def test_cli_takes_distill_and_refuses_a_weight_above_one_in_one_line(small_ckpt, idx_dir, tmp_path, monkeypatch,
                                                                       capsys):
    args = ["prune", "--checkpoint", str(small_ckpt), "--data-dir", str(idx_dir), "--scope", "fc1",
            "--steps", "1", "--maps-per-step", "4", "--quiet"]
    monkeypatch.setattr(sys, "argv", ["fmprune", *args, "--distill", "1.5", "--run-dir", str(tmp_path / "bad")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "fmprune: error: distillation weight must be in [0, 1], got 1.5\n"
    assert not (tmp_path / "bad").exists()
    ok = CliRunner().invoke(cli, [*args, "--distill", "0.5", "--final-tune", "5", "--run-dir", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["distill"] == 0.5
