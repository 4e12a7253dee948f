"""fmprune.Pruner inside a user's loop: the same decisions as `fmprune prune`'s engine, any loss,
removal to a target, the model a plain nn.Module again, and one-line errors that change nothing."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
import torch.nn.functional as F

import fmprune
from fmprune.criteria import create_criterion
from fmprune.data import Split
from fmprune.engine import create_engine
from fmprune.run.config import PruneConfig
from fmprune.data import calibration_subset
from support.graph_models import ResidualBN, randomize_norms
from support.transformer_models import SmallViT

CHUNK = 50


def feed(pruner: fmprune.Pruner, model: torch.nn.Module, split: Split, loss_reduction: str = "sum") -> None:
    """The user's side: forward, loss, backward, accumulate, on ``split`` in chunks (eval mode,
    as the engine scores)."""
    model.eval()
    for start in range(0, len(split), CHUNK):
        x, y = split.images[start:start + CHUNK], split.labels[start:start + CHUNK]
        F.cross_entropy(model(x), y, reduction=loss_reduction).backward()
        pruner.accumulate()
        model.zero_grad()


def chosen(selection) -> list[tuple[str, int]]:
    return [(s.layer, s.original) for s in selection]


def test_lenet_decisions_equal_fmprune_prune_step_for_step(small_ckpt, splits, tmp_path):
    """`fmprune prune`'s run (steps.csv) and a Pruner fed the same calibration images remove the
    same maps at every step."""
    config = PruneConfig(criterion="taylor", normalize="l2", maps_per_step=2, steps=6, calibration=200)
    fmprune.run_pruning(small_ckpt, splits, config, tmp_path / "run")
    with open(tmp_path / "run" / "steps.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["layer"]]
    by_step: dict[int, list[tuple[str, int]]] = {}
    for r in rows:
        by_step.setdefault(int(r["step"]), []).append((r["layer"], int(r["map"])))

    model = fmprune.load_checkpoint(small_ckpt).build()
    calibration = calibration_subset(splits.train, 200, 0)
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28), criterion="taylor", normalize="l2")
    for step in range(1, 7):
        feed(pruner, model, calibration)
        assert chosen(pruner.step(maps=2)) == by_step[step], f"step {step}"


@pytest.mark.parametrize("criterion, norm, lam", [
    ("taylor", "none", 1e-3),
    ("taylor", "lamp", 0.0),
    ("mean_activation", "l2", 0.0),
    ("weight_grad", "l2", 0.0),
    ("min_weight", "l1", 0.0),
])
def test_lenet_decisions_equal_the_engine(small_trained, splits, criterion, norm, lam):
    calibration, k = splits.train.subset(150), 2
    engine_model, user_model = copy.deepcopy(small_trained).eval(), copy.deepcopy(small_trained).eval()
    graph = fmprune.trace(engine_model, torch.zeros(1, 1, 28, 28))
    engine = create_engine(graph, create_criterion(criterion), splits.val, calibration, graph.names, norm, lam)
    pruner = fmprune.Pruner(user_model, torch.zeros(1, 1, 28, 28), criterion=criterion, normalize=norm,
                            flops_lambda=lam)
    for step in range(8):
        expected = engine.select(k)
        engine.remove_selected(expected)
        if pruner.reads_data:
            feed(pruner, user_model, calibration)
        assert chosen(pruner.step(maps=k)) == chosen(expected), f"step {step}"


def conv_bn_net() -> torch.nn.Module:
    """Every producer followed by a BatchNorm (what taylor_bn reads), ReLU modules in place."""
    torch.manual_seed(1)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                         nn.Conv2d(6, 7, 3, padding=1), nn.BatchNorm2d(7), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 4))


class SharedReLU(torch.nn.Module):
    """One ReLU module called after every conv: its hooks fire three times per forward."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.c1, self.b1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.c2, self.b2 = nn.Conv2d(6, 7, 3, padding=1), nn.BatchNorm2d(7)
        self.relu, self.fc = nn.ReLU(), nn.Linear(7, 4)

    def forward(self, x):
        x = self.relu(self.b1(self.c1(x)))
        x = self.relu(self.b2(self.c2(x)))
        return self.fc(self.relu(x).mean((2, 3)))


@pytest.mark.parametrize("criterion, build", [
    ("taylor", SharedReLU), ("mean_activation", SharedReLU),
    ("taylor", ResidualBN), ("weight_grad", ResidualBN), ("l1_filter", ResidualBN), ("slimming", conv_bn_net),
    ("taylor_bn", conv_bn_net), ("taylor", conv_bn_net), ("mean_activation", conv_bn_net),
])
def test_residual_groups_score_as_the_general_engine(criterion, build):
    """Residual adds, BatchNorm, functional ReLUs (hooks sit on the BN before F.relu) and
    in-place ReLU modules."""
    torch.manual_seed(0)
    model = randomize_norms(build()).eval()
    x, y = torch.randn(40, 3, 8, 8), torch.randint(0, 4, (40,))
    graph = fmprune.trace(copy.deepcopy(model), x[:1])
    engine = create_engine(graph, create_criterion(criterion), Split(x, y), Split(x, y), graph.names, "l2",
                           fast=False)
    pruner = fmprune.Pruner(model, x[:1], criterion=criterion, normalize="l2")
    if pruner.reads_data:
        feed(pruner, model, Split(x, y))
    expected = engine.final_scores()
    got = pruner.scores()
    assert list(got) == list(expected)
    for name in expected:
        assert torch.allclose(got[name].double(), expected[name].double(), rtol=1e-4, atol=1e-9), name


def test_any_loss_and_mean_reduction_give_the_same_ranking(small_trained, splits):
    """Selection only compares scores: a loss scaled by 1/N ranks maps as its sum does."""
    cal = splits.train.subset(100)
    picks = []
    for reduction in ("sum", "mean"):
        model = copy.deepcopy(small_trained)
        pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28))
        feed(pruner, model, cal, reduction)
        picks.append(chosen(pruner.step(maps=5)))
    assert picks[0] == picks[1]


def test_target_macs_is_reached_and_the_model_stays_consistent(small_trained, splits):
    model = copy.deepcopy(small_trained)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28))
    base = pruner.graph.total_macs()
    model.train()
    x, y = splits.train.images[:64], splits.train.labels[:64]
    F.cross_entropy(model(x), y).backward()
    pruner.accumulate()
    optimizer.step()
    removed = pruner.step(target_macs=0.5, optimizer=optimizer)
    assert removed and pruner.graph.total_macs() <= 0.5 * base
    # the model trains on with its optimizer (state sliced with the weights)
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    report = pruner.report(print_it=False)
    assert report.macs == (base, pruner.graph.total_macs())
    assert report.groups["conv1"] == (6, len(pruner.graph.alive("conv1")))


def test_a_count_with_a_target_stops_at_the_target(small_trained, splits):
    model = copy.deepcopy(small_trained)
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28))
    base = pruner.graph.total_macs()
    feed(pruner, model, splits.train.subset(50))
    removed = pruner.step(maps=20, target_macs=0.9)
    assert 1 <= len(removed) < 20 and pruner.graph.total_macs() <= 0.9 * base * 1.02
    feed(pruner, model, splits.train.subset(50))
    assert pruner.step(maps=5, target_macs=0.99) == []            # already met: nothing to remove


def test_automatic_accumulation_needs_no_calls(small_trained, splits):
    cal = splits.train.subset(100)
    manual_model, auto_model = copy.deepcopy(small_trained), copy.deepcopy(small_trained)
    manual = fmprune.Pruner(manual_model, torch.zeros(1, 1, 28, 28))
    auto = fmprune.Pruner(auto_model, torch.zeros(1, 1, 28, 28), auto=True)
    feed(manual, manual_model, cal)
    auto_model.eval()
    for start in range(0, len(cal), CHUNK):
        F.cross_entropy(auto_model(cal.images[start:start + CHUNK]), cal.labels[start:start + CHUNK],
                        reduction="sum").backward()
    assert chosen(auto.step(maps=4)) == chosen(manual.step(maps=4))


def test_evaluation_under_no_grad_is_not_recorded(small_trained, splits):
    model = copy.deepcopy(small_trained)
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28))
    with torch.no_grad():
        model(splits.val.images[:20])
    assert pruner.accumulate() == 0 and pruner.examples == 0


def test_remove_hooks_leaves_a_plain_module(small_trained):
    model = copy.deepcopy(small_trained)
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28))
    assert any(m._forward_hooks for m in model.modules())
    pruner.remove_hooks()
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(fmprune.FmpruneError, match="hooks were removed"):
        pruner.step(maps=1)


def _unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_bad_input_is_one_line_and_changes_nothing(small_trained, splits):
    model = copy.deepcopy(small_trained)
    before = copy.deepcopy(model.state_dict())
    example = torch.zeros(1, 1, 28, 28)
    other = torch.nn.Linear(2, 2)
    with pytest.raises(fmprune.FmpruneError, match="not part of the model"):
        fmprune.Pruner(model, example, ignore=[other])
    with pytest.raises(fmprune.FmpruneError, match="no module named 'head'"):
        fmprune.Pruner(model, example, ignore=["head"])
    with pytest.raises(fmprune.FmpruneError, match="unknown criterion"):
        fmprune.Pruner(model, example, criterion="nope")
    with pytest.raises(fmprune.FmpruneError, match="passes of its own"):
        fmprune.Pruner(model, example, criterion="oracle")
    with pytest.raises(fmprune.FmpruneError, match="normalize must be one of"):
        fmprune.Pruner(model, example, normalize="l3")
    pruner = fmprune.Pruner(model, example)
    with pytest.raises(fmprune.FmpruneError, match="before step"):
        pruner.step(maps=1)
    model.train()
    F.cross_entropy(model(splits.train.images[:8]), splits.train.labels[:8]).backward()
    pruner.accumulate()
    with pytest.raises(fmprune.FmpruneError, match="more than the 35 maps"):
        pruner.step(maps=36)
    with pytest.raises(fmprune.FmpruneError, match="below the smallest model"):
        pruner.step(target_macs=0.001)
    with pytest.raises(fmprune.FmpruneError, match="takes maps= or fraction="):
        pruner.step(maps=1, fraction=0.1)
    with pytest.raises(fmprune.FmpruneError, match="positive integer"):
        pruner.step(maps=0)
    assert _unchanged(model, before)
    for message in ("maps", "fraction"):
        assert "\n" not in message


def test_an_optimizer_left_holding_replaced_parameters_is_refused_at_its_step(small_trained, splits):
    """Surgery gives cut layers new tensors: the optimizer passed to step() follows them; one
    built before the step and not passed would silently train the old ones, so its next step()
    is a one-line error that changes nothing."""
    model = copy.deepcopy(small_trained)
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28))
    passed, other = torch.optim.SGD(model.parameters(), 0.01), torch.optim.Adam(model.parameters(), 1e-3)
    images, labels = splits.train.images[:16], splits.train.labels[:16]
    F.cross_entropy(model(images), labels).backward()
    pruner.accumulate()
    pruner.step(maps=2, optimizer=passed)
    passed.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    before = copy.deepcopy(model.state_dict())
    passed.step()                                                   # follows the surgery
    assert not _unchanged(model, before)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(fmprune.FmpruneError, match=r"Adam.step\(\): it still holds \d+ parameter tensor\(s\) that "
                                                   r"fmprune.Pruner.step\(\) replaced") as error:
        other.step()
    assert "\n" not in str(error.value) and _unchanged(model, before)
    torch.optim.Adam(model.parameters(), 1e-3).step()               # a new optimizer is fine


@pytest.mark.parametrize("criterion, message", [
    ("taylor_bn", "layer '3' has no BatchNorm between it and its feature map: taylor_bn needs one"),
    ("slimming", "slimming: group '3' has no BatchNorm with a scale"),
])
def test_a_batchnorm_criterion_refuses_a_group_without_one_when_the_pruner_is_made(criterion, message):
    """Refused at Pruner(...), before the user's training, not at the first step() after it."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 2))
    with pytest.raises(fmprune.FmpruneError, match=message):
        fmprune.Pruner(model, torch.zeros(1, 3, 16, 16), criterion=criterion)
    assert fmprune.Pruner(model, torch.zeros(1, 3, 16, 16), criterion=criterion, scope=["0"]).scope == ["0"]


def test_backward_that_misses_a_layer_is_named():
    """A two-headed model whose loss uses one head: the other head's layers get no gradient."""

    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.a = torch.nn.Conv2d(8, 6, 3, padding=1)
            self.b = torch.nn.Conv2d(8, 5, 3, padding=1)
            self.head_a, self.head_b = torch.nn.Linear(6, 3), torch.nn.Linear(5, 1)

        def forward(self, x):
            h = F.relu(self.body(x))
            a = F.adaptive_avg_pool2d(F.relu(self.a(h)), 1).flatten(1)
            b = F.adaptive_avg_pool2d(F.relu(self.b(h)), 1).flatten(1)
            return self.head_a(a), self.head_b(b)

    model = TwoHeads()
    pruner = fmprune.Pruner(model, torch.zeros(1, 3, 8, 8))
    logits, _ = model(torch.randn(4, 3, 8, 8))
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    with pytest.raises(fmprune.FmpruneError, match=r"did not reach layer\(s\) b:"):
        pruner.accumulate()
    with pytest.raises(fmprune.FmpruneError, match="after loss.backward"):
        model(torch.randn(4, 3, 8, 8))
        pruner.accumulate()


class ChannelsLastMLP(torch.nn.Module):
    """A ConvNeXt-style block: channels moved last, LayerNorm and an MLP over the last axis."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.norm, self.up, self.down = nn.LayerNorm(8), nn.Linear(8, 16), nn.Linear(16, 8)
        self.act, self.fc = nn.GELU(), nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        h = self.down(self.act(self.up(self.norm(x.permute(0, 2, 3, 1)))))
        return self.fc((x + h.permute(0, 3, 1, 2)).mean((2, 3)))


def test_channels_last_maps_are_scored_by_hand_and_alike_in_both_paths():
    torch.manual_seed(0)
    model = ChannelsLastMLP().eval()
    x, y = torch.randn(12, 3, 6, 6), torch.randint(0, 4, (12,))
    graph = fmprune.trace(copy.deepcopy(model), x[:1])
    assert "up" in graph.names
    engine = create_engine(graph, create_criterion("taylor"), Split(x, y), Split(x, y), ["up"], "none")
    pruner = fmprune.Pruner(model, x[:1], normalize="none", scope=["up"])
    feed(pruner, model, Split(x, y))
    # by hand: a = GELU(up(...)) is N×H×W×16, its maps on the last axis
    m = copy.deepcopy(model)
    a = m.act(m.up(m.norm(m.stem(x).permute(0, 2, 3, 1))))
    a.retain_grad()
    out = m.fc((m.stem(x) + m.down(a).permute(0, 3, 1, 2)).mean((2, 3)))
    F.cross_entropy(out, y, reduction="sum").backward()
    expected = (a.grad * a).sum((1, 2)).div(36).abs().mean(0).detach()
    assert torch.allclose(engine.raw_scores()["up"].double(), expected.double(), rtol=1e-4, atol=1e-9)
    assert torch.allclose(pruner.scores()["up"].double(), expected.double(), rtol=1e-4, atol=1e-9)


def test_forwards_are_not_recorded_while_recording_is_off(small_trained, splits):
    model = copy.deepcopy(small_trained)
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28))
    pruner.recording = False
    F.cross_entropy(model(splits.train.images[:10]), splits.train.labels[:10]).backward()
    assert pruner.accumulate() == 0
    pruner.recording = True
    F.cross_entropy(model(splits.train.images[:10]), splits.train.labels[:10]).backward()
    assert pruner.accumulate() == 10 and pruner.examples == 10


def test_a_small_vit_prunes_in_the_loop_heads_by_weights_mlp_units_by_taylor(tmp_path):
    """Attention heads have no feature map: weight criteria score them (one row per head), data
    criteria leave them out of scope "all" with a note; `fmprune prune`'s run does the same."""
    torch.manual_seed(0)
    classes = SmallViT()(torch.zeros(1, 3, 8, 8)).shape[1]
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, classes, (16,))
    by_weights = fmprune.Pruner(SmallViT(), x[:1], criterion="l1_filter")
    heads = [n for n in by_weights.scope if not by_weights.graph.members(n)]
    assert heads and all(len(by_weights.scores()[n]) == by_weights.graph.group(n).size for n in heads)
    model = SmallViT()
    taylor = fmprune.Pruner(model, x[:1], criterion="taylor")
    assert not set(heads) & set(taylor.scope) and any("attention heads" in n for n in taylor.notes)
    F.cross_entropy(model(x), y).backward()
    taylor.accumulate()
    removed = taylor.step(maps=3)
    assert len(removed) == 3 and model(x).shape == (16, classes)
    with pytest.raises(fmprune.FmpruneError, match="has no feature maps"):
        fmprune.Pruner(SmallViT(), x[:1], criterion="taylor", scope=heads[:1])


def test_the_oracle_in_the_loop_equals_the_engines(small_trained, splits):
    """The oracle from the user's loss_fn (here the mean cross-entropy on a calibration split, as the
    engine computes it) scores every group map as the engine's masked removal does."""
    cal = splits.train.subset(120)
    graph = fmprune.trace(copy.deepcopy(small_trained).eval(), torch.zeros(1, 1, 28, 28))
    engine = create_engine(graph, create_criterion("oracle"), splits.val, cal, graph.names, "none")
    model = copy.deepcopy(small_trained).eval()

    def loss_fn(m):
        return F.cross_entropy(m(cal.images), cal.labels)

    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28), criterion="oracle", normalize="none", loss_fn=loss_fn)
    expected, got = engine.final_scores(), pruner.scores()
    for name in expected:
        assert torch.allclose(got[name].double(), expected[name].double(), rtol=1e-4, atol=1e-7), name
    assert chosen(pruner.step(maps=3)) == chosen(engine.select(3))


def test_obd_hutchinson_in_the_loop_is_exact_for_a_diagonal_hessian():
    """loss = Σ c·w² over the first layer's weights: its Hessian is diagonal (2c), so every
    Rademacher sample gives it exactly, and a map's OBD saliency is ½ Σ 2c·w² over its row."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    c = torch.rand(3, 4)

    def loss_fn(m):
        return (c * m[0].weight.square()).sum()

    pruner = fmprune.Pruner(model, torch.zeros(1, 4), criterion="obd_hutchinson", normalize="none", loss_fn=loss_fn)
    expected = 0.5 * (2 * c * model[0].weight.detach().square()).sum(1)   # the bias has zero curvature
    assert torch.allclose(pruner.scores()["0"].double(), expected.double(), rtol=1e-6)
    with pytest.raises(fmprune.FmpruneError, match="loss_fn="):
        fmprune.Pruner(model, torch.zeros(1, 4), criterion="oracle")
    with pytest.raises(fmprune.FmpruneError, match="per-example Fisher"):
        fmprune.Pruner(model, torch.zeros(1, 4), criterion="obd", loss_fn=loss_fn)
