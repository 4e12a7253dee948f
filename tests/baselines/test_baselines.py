"""The classic baselines against hand computations on tiny models: L1 filter ranks and one-shot
plans, ThiNet's greedy choice and least-squares rescale, slimming's |γ| ranking and its L1 term,
sensitivity curves, and the commands end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import fmprune
from fmprune.baselines.plan import global_plan, parse_ratios, per_layer_plan, ratio_for_target
from fmprune.baselines.scores import group_scores
from fmprune.baselines.sensitivity import layer_sensitivity
from fmprune.baselines.thinet_rescale import least_squares_scales, thinet_prune
from fmprune.criteria.thinet import check_thinet_scope, consumer_of, contributions, greedy_removal
from fmprune.criteria import available_criteria, create_criterion
from fmprune.data import Split
from fmprune.errors import FmpruneError, PruningError
from fmprune.training import BatchStream, fine_tune
from support.fixture_data import SMALL_SPEC


def split_of(images: torch.Tensor, labels: torch.Tensor | None = None) -> Split:
    return Split(images, labels if labels is not None else torch.zeros(len(images), dtype=torch.long))


def set_weights(layer: nn.Module, weight, bias=None) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32).view_as(layer.weight))
        if layer.bias is not None:
            layer.bias.copy_(torch.tensor(bias if bias is not None else [0.0] * layer.bias.numel()))


# --- L1 filter (Li et al.) -------------------------------------------------------------------------

def conv_chain() -> nn.Sequential:
    """conv(1->3, 1x1) -> relu -> conv(3->2, 1x1) -> relu -> flatten -> linear(2*2*2 -> 2)."""
    m = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    set_weights(m[0], [0.5, -2.0, 0.25])            # |w| sums 0.5, 2.0, 0.25
    set_weights(m[2], [[1.0, -1.0, 3.0], [0.1, 0.1, -0.1]])   # 5.0 and 0.3
    return m


def test_l1_scores_and_per_layer_plan_by_hand():
    m = conv_chain()
    graph = fmprune.trace(m, torch.zeros(1, 1, 2, 2))
    scores = group_scores(graph, create_criterion("l1_filter"), split_of(torch.rand(4, 1, 2, 2)), graph.names)
    assert graph.names == ["0", "2"]
    assert scores["0"].tolist() == pytest.approx([0.5, 2.0, 0.25])
    assert scores["2"].tolist() == pytest.approx([5.0, 0.3])
    # round(0.5*3) = 2 maps of conv 0 (the two smallest), round(0.5*2) = 1 of conv 2
    assert per_layer_plan(scores, {"0": 0.5, "2": 0.5}) == {"0": [0, 2], "2": [1]}
    assert per_layer_plan(scores, {"0": 0.34}) == {"0": [2], "2": []}
    # a ratio never empties a layer
    assert per_layer_plan(scores, {"0": 0.99, "2": 0.99}) == {"0": [0, 2], "2": [1]}


def test_global_plan_ranks_raw_scores_across_layers_and_keeps_a_map_per_layer():
    scores = {"a": torch.tensor([0.5, 2.0, 0.25]), "b": torch.tensor([5.0, 0.3])}
    # order: a2 0.25, b1 0.3, a0 0.5, a1 2.0, b0 5.0
    assert global_plan(scores, ratio=0.4) == {"a": [2], "b": [1]}
    assert global_plan(scores, ratio=0.6) == {"a": [0, 2], "b": [1]}
    assert global_plan(scores, threshold=0.4) == {"a": [2], "b": [1]}
    assert global_plan(scores, threshold=100.0) == {"a": [0, 2], "b": [1]}   # best map of each layer stays


def test_parse_ratios_and_one_line_errors():
    assert parse_ratios("conv1=0.5, conv2=0.25") == {"conv1": 0.5, "conv2": 0.25}
    for bad in ("conv1", "conv1=1.0", "conv1=x", "=0.5", ""):
        with pytest.raises(FmpruneError):
            parse_ratios(bad)


def test_ratio_for_target_is_the_smallest_meeting_it():
    m = conv_chain()
    graph = fmprune.trace(m, torch.zeros(1, 1, 2, 2))
    scores = {n: torch.arange(graph.group(n).size, dtype=torch.float64) for n in graph.names}
    base = graph.total_macs()
    ratio = ratio_for_target(graph, scores, 0.7, "macs", resolution=100)
    from fmprune.baselines.plan import size_after, count_for
    at = lambda r: size_after(graph, {n: count_for(graph.group(n).size, r) for n in graph.names}).macs  # noqa: E731
    assert at(ratio) <= 0.7 * base < at(ratio - 0.01)
    with pytest.raises(PruningError, match="below what the scope can reach"):
        ratio_for_target(graph, scores, 0.01, "macs", resolution=100)


# --- ThiNet (Luo et al.) ------------------------------------------------------------------------------

def test_greedy_choice_follows_the_reconstruction_error_not_the_norms():
    # samples x maps; norms² 1, 1.21, 1.44, but map 2 cancels map 0: chosen second
    x = torch.tensor([[1.0, 0.0, -1.2], [0.0, 1.1, 0.0]])
    choice = greedy_removal(x)
    assert choice.order == [0, 2, 1]
    assert choice.errors == pytest.approx([1.0, 0.04, 1.25])
    scores = choice.scores()
    assert torch.sort(scores, stable=True).indices.tolist() == [0, 2, 1]   # strictly increasing along the order
    assert greedy_removal(x, 1).order == [0]


def test_least_squares_rescale_by_hand():
    # keep maps 1, 2 of x: A = [[2,0],[1,1],[0,1]], y = row sums of x = [3,2,2]
    # AᵀA = [[5,1],[1,2]], Aᵀy = [8,4]  ->  w = [4/3, 4/3], residual [1/3,-2/3,2/3], ‖r‖² = 1
    x = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    w = least_squares_scales(x[:, [1, 2]], x.sum(1))
    assert w.tolist() == pytest.approx([4 / 3, 4 / 3])


def linear_thinet_model() -> nn.Sequential:
    """flatten -> linear(3->3, identity, no bias) -> relu -> linear(3->1, weights 1,2,1): the
    contributions of the hidden maps to the output are (h0, 2·h1, h2)."""
    m = nn.Sequential(nn.Flatten(), nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 1))
    set_weights(m[1], torch.eye(3).tolist())
    set_weights(m[3], [[1.0, 2.0, 1.0]], [0.5])
    return m


def test_thinet_on_a_linear_consumer_matches_the_hand_solution():
    m = linear_thinet_model()
    graph = fmprune.trace(m, torch.zeros(1, 1, 1, 3))
    h = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 1.0]]).view(3, 1, 1, 3)
    calib = split_of(h)
    x = contributions(graph, "1", calib, samples_per_image=1)
    assert torch.allclose(x, torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]], dtype=torch.float64))
    # column norms² 2, 5, 2: map 0 goes first (tie with map 2: lower index)
    result = thinet_prune(graph, "1", 1, calib, samples_per_image=1)
    assert result.removed == [0]
    assert result.error_before == pytest.approx(2.0)
    assert result.error_after == pytest.approx(1.0)
    assert result.scales.tolist() == pytest.approx([4 / 3, 4 / 3])
    assert m[3].weight.detach().flatten().tolist() == pytest.approx([2 * 4 / 3, 1 * 4 / 3])   # 2 and 1, rescaled
    assert m[3].bias.item() == 0.5
    assert m[1].weight.shape == (2, 3)


def test_thinet_conv_contributions_by_hand():
    # producer: 2 maps = the two input channels (1x1 identity conv); consumer conv(2->1, 2x2) on a 2x2 map:
    # one output entry, so the samples are fixed: x̂_c = Σ_{kh,kw} W[0,c]·x[c]
    m = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 2), nn.Flatten(), nn.Linear(1, 2))
    set_weights(m[0], [[1.0, 0.0], [0.0, 1.0]])
    set_weights(m[2], [[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [0.0, 1.0]]])
    graph = fmprune.trace(m, torch.zeros(1, 2, 2, 2))
    images = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[2.0, 1.0], [1.0, 3.0]]]])
    x = contributions(graph, "0", split_of(images), samples_per_image=2)
    # channel 0: 1·1 + 4·1 = 5; channel 1: -1·2 + 1·3 = 1 (both samples hit the only entry)
    assert torch.allclose(x, torch.tensor([[5.0, 1.0], [5.0, 1.0]], dtype=torch.float64))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 2, 1)
        self.head = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.relu(self.b(y) + y)
        return self.head(torch.relu(self.c(y)).flatten(1))


def test_thinet_refuses_a_group_without_a_single_next_layer():
    graph = fmprune.trace(Residual(), torch.zeros(1, 1, 4, 4))
    with pytest.raises(PruningError, match="ThiNet: group 'a'"):
        consumer_of(graph, "a")
    assert consumer_of(graph, "c").name == "head"
    with pytest.raises(PruningError, match="ThiNet can prune: --scope c"):
        check_thinet_scope(graph, graph.names)


# --- network slimming (Liu et al.) ----------------------------------------------------------------------

def bn_model() -> nn.Sequential:
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.Conv2d(4, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with torch.no_grad():
        m[1].weight.copy_(torch.tensor([0.5, -0.1, 2.0, 0.05]))
        m[4].weight.copy_(torch.tensor([-0.3, 0.02, 1.0]))
    return m


def test_slimming_ranks_by_absolute_gamma_globally():
    m = bn_model()
    graph = fmprune.trace(m, torch.zeros(1, 1, 4, 4))
    scores = group_scores(graph, create_criterion("slimming"), split_of(torch.rand(2, 1, 4, 4)), graph.names)
    assert scores["0"].tolist() == pytest.approx([0.5, 0.1, 2.0, 0.05])
    assert scores["3"].tolist() == pytest.approx([0.3, 0.02, 1.0])
    # threshold 0.2: |γ| 0.1, 0.05 (conv 0) and 0.02 (conv 3)
    assert global_plan(scores, threshold=0.2) == {"0": [1, 3], "3": [1]}


def test_slimming_refuses_a_layer_without_batchnorm():
    graph = fmprune.trace(conv_chain(), torch.zeros(1, 1, 2, 2))
    with pytest.raises(PruningError, match="no BatchNorm"):
        group_scores(graph, create_criterion("slimming"), split_of(torch.rand(2, 1, 2, 2)), graph.names)


def seeded_bn_model() -> nn.Sequential:
    torch.manual_seed(3)
    return bn_model()


def test_bn_l1_adds_lambda_sign_gamma_to_the_gradient_and_nothing_at_zero():
    torch.manual_seed(0)
    data = split_of(torch.rand(8, 1, 4, 4), torch.randint(0, 2, (8,)))
    lam, lr = 0.5, 0.1
    trained = {}
    for penalty in (0.0, lam):
        model = seeded_bn_model()
        fine_tune(model, BatchStream(data, 4, 0), torch.optim.SGD(model.parameters(), lr=lr), 1, bn_l1=penalty)
        trained[penalty] = model
    for penalty in (0.0, lam):   # by hand: the cross-entropy's gradient, plus λ·sign(γ) on the scales
        reference = seeded_bn_model()
        x, y = next(BatchStream(data, 4, 0))
        reference.train()
        nn.functional.cross_entropy(reference(x), y).backward()
        gammas = [reference[1].weight, reference[4].weight]
        before = [g.detach().clone() for g in gammas]
        for gamma in gammas:
            gamma.grad += penalty * torch.sign(gamma.detach())
        torch.optim.SGD(reference.parameters(), lr=lr).step()
        for ours, theirs in zip(trained[penalty].parameters(), reference.parameters()):
            assert torch.equal(ours.detach(), theirs.detach())
        if penalty:   # the term moved every scale towards zero by lr·λ on top of the cross-entropy step
            plain = [trained[0.0][1].weight.detach(), trained[0.0][4].weight.detach()]
            for b, p, g in zip(before, plain, gammas):
                assert torch.allclose(g.detach(), p - lr * lam * torch.sign(b), atol=1e-7)


def test_bn_l1_refuses_a_model_without_batchnorm():
    optimizer = torch.optim.SGD(conv_chain().parameters(), lr=0.1)
    with pytest.raises(FmpruneError, match="no BatchNorm"):
        fine_tune(conv_chain(), BatchStream(split_of(torch.rand(4, 1, 2, 2)), 2, 0), optimizer, 1, bn_l1=1e-4)


def test_the_baselines_are_listed_with_their_papers():
    assert {"l1_filter", "thinet", "slimming"} <= set(available_criteria())
    for name in ("l1_filter", "thinet", "slimming"):
        assert "2017" in create_criterion(name).paper


# --- sensitivity (Li et al. figure) ---------------------------------------------------------------------

def dead_maps_model() -> nn.Sequential:
    """flatten -> linear(2->4: maps 0, 1 copy the inputs, maps 2, 3 are dead) -> relu -> linear(4->2):
    class = argmax of the input. Pruning the dead maps costs nothing; then a live one goes."""
    m = nn.Sequential(nn.Flatten(), nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    set_weights(m[1], [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    set_weights(m[3], [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    return m


def test_sensitivity_curve_is_flat_over_dead_maps_then_falls():
    torch.manual_seed(1)
    x = torch.rand(200, 1, 1, 2) + 0.01
    labels = x.flatten(1).argmax(1)
    data = split_of(x, labels)
    model = dead_maps_model()
    graph = fmprune.trace(model, torch.zeros(1, 1, 1, 2))
    before = [p.detach().clone() for p in model.parameters()]
    result = layer_sensitivity(graph, "l1_filter", data, data, ratios=[0.25, 0.5, 0.75])
    assert result.base_accuracy == 1.0
    assert result.removed == {"1": [1, 2, 3]}
    acc = result.accuracy["1"]
    assert acc[0] == acc[1] == 1.0
    assert acc[2] == pytest.approx(float((labels == 1).float().mean()))   # map 0 gone: always class 1
    assert result.ratios_within(0.0) == {"1": 0.5}
    assert result.ratios_within(1.0) == {"1": 0.75}
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))   # the model is untouched


def test_sensitivity_with_thinet_rescales_and_keeps_the_model():
    model = linear_thinet_model()
    graph = fmprune.trace(model, torch.zeros(1, 1, 1, 3))
    h = torch.rand(30, 1, 1, 3)
    result = layer_sensitivity(graph, "thinet", split_of(h), split_of(h), ratios=[0.3, 0.6])
    assert result.removed == {"1": [1, 2]}
    assert len(result.accuracy["1"]) == 2
    assert model[3].weight.shape == (1, 3)


# --- the commands end to end ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory, splits):
    from fmprune.models import build_model
    from fmprune.run.checkpoint import make_checkpoint, save_checkpoint
    from fmprune.training import TrainConfig, train

    torch.manual_seed(0)
    model = build_model(SMALL_SPEC)
    train(model, splits.train, TrainConfig(epochs=1, batch_size=50, lr=3e-3))
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    save_checkpoint(make_checkpoint(model, SMALL_SPEC, data_fingerprint=splits.fingerprint()), path)
    return path


def test_sensitivity_then_oneshot_commands(small_checkpoint, idx_dir, tmp_path):
    from click.testing import CliRunner
    from fmprune.cli import cli

    runner = CliRunner()
    sens = tmp_path / "sens"
    out = runner.invoke(cli, ["sensitivity", str(small_checkpoint), "--data-dir", str(idx_dir), "--ratios", "0.5,0.8",
                              "--out-dir", str(sens), "--max-drop", "0.5", "--quiet", "--calibration", "100"])
    assert out.exit_code == 0, out.output
    assert "--ratios conv1=" in out.output
    assert (sens / "sensitivity.png").is_file() and (sens / "sensitivity.csv").is_file()
    run = tmp_path / "oneshot"
    out = runner.invoke(cli, ["oneshot", str(small_checkpoint), "--data-dir", str(idx_dir), "--sensitivity", str(sens),
                              "--max-drop", "0.5", "--retrain", "5", "--quiet", "--run-dir", str(run),
                              "--calibration", "100"])
    assert out.exit_code == 0, out.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_params"] < summary["base_params"]
    score = json.loads((run / "score.json").read_text())
    assert score["method"] == "l1_filter one-shot"
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "oneshot" and config["ratios"].startswith("conv1=")
    pruned = fmprune.load_checkpoint(run / "model.pt").build_traced()[1].sizes()
    assert pruned == summary["maps_after"]


def test_oneshot_refuses_bad_input_before_writing(small_checkpoint, splits, tmp_path):
    from fmprune.baselines.oneshot import OneShotConfig, run_oneshot

    with pytest.raises(FmpruneError, match="exactly one of"):
        OneShotConfig(ratio=0.5, threshold=0.1)
    with pytest.raises(FmpruneError, match="--global"):
        OneShotConfig(threshold=0.1)
    with pytest.raises(FmpruneError, match="do not compare across layers"):
        OneShotConfig(criterion="thinet", ratio=0.5, global_ranking=True)
    run = tmp_path / "never"
    with pytest.raises(FmpruneError, match="no BatchNorm"):
        run_oneshot(small_checkpoint, splits, OneShotConfig(criterion="slimming", ratio=0.3, global_ranking=True,
                                                             calibration=50), run)
    with pytest.raises(FmpruneError, match="removes no map"):
        run_oneshot(small_checkpoint, splits, OneShotConfig(ratio=0.01, calibration=50), run)
    assert not run.exists()


def test_thinet_and_slimming_work_in_the_map_by_map_loop(tmp_path):
    from fmprune.engine import create_engine

    m = bn_model()
    graph = fmprune.trace(m, torch.zeros(1, 1, 4, 4))
    data = split_of(torch.rand(20, 1, 4, 4), torch.randint(0, 2, (20,)))
    engine = create_engine(graph, create_criterion("slimming"), data, data, graph.names)
    assert engine.raw_scores()["0"].tolist() == pytest.approx([0.5, 0.1, 2.0, 0.05])
    assert engine.select(2)[0].layer == "3" and engine.select(2)[0].index == 1   # |γ| 0.02 first
    lin = linear_thinet_model()
    graph = fmprune.trace(lin, torch.zeros(1, 1, 1, 3))
    h = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 1.0]]).view(3, 1, 1, 3)
    engine = create_engine(graph, create_criterion("thinet"), split_of(h), split_of(h), graph.names)
    assert engine.select(1)[0].index == 0


# --- the lab recipe: follow-up steps of a sweep ------------------------------------------------------------

def test_sweep_follow_ups_score_every_result_and_resume(small_checkpoint, idx_dir, tmp_path):
    from fmprune.study.experiments import load_experiment
    from fmprune.study.report import find_score_records, write_report
    from fmprune.study.sweep import plan_sweep, run_task

    toml = tmp_path / "lab.toml"
    toml.write_text(f'''
[experiment]
name = "lab"
kind = "oneshot"
checkpoint = "{small_checkpoint}"
[settings]
calibration = 50
eval_split = "test"
[axes]
ratio = [0.3]
[[then]]
kind = "score"
[[then]]
kind = "sparsify"
name = "sparse"
method = "magnitude"
amount = 0.5
eval_split = "test"
[[then]]
kind = "quantize"
name = "w4"
input = "sparse"
weight_bits = 4
activation_bits = 4
calibration = 50
''')
    experiment = load_experiment(toml)
    outcomes, tasks = plan_sweep(experiment, str(small_checkpoint), tmp_path / "runs")
    assert [t.label for t in tasks] == ["base", "l1_filter"] and not outcomes
    for task in tasks:
        outcome = run_task(task, str(idx_dir))
        assert outcome.status == "done", outcome.message
    records = {r.label: r for _, r in find_score_records([tmp_path / "runs"])}
    assert set(records) == {"base", "base sparse", "base w4", "l1_filter", "l1_filter sparse", "l1_filter w4"}
    assert records["l1_filter w4"].method == "l1_filter one-shot + magnitude 50% + fake w4a4 ptq"
    assert records["base w4"].method == "base + magnitude 50% + fake w4a4 ptq"
    assert records["l1_filter sparse"].values["p_u"] > 0.4 and records["l1_filter w4"].values["q_w"] == 4
    assert records["l1_filter"].score < records["base"].score
    assert plan_sweep(experiment, str(small_checkpoint), tmp_path / "runs")[1] == []   # all done
    (tmp_path / "runs" / "lab" / "l1_filter" / "w4" / "score.json").unlink()
    _, tasks = plan_sweep(experiment, str(small_checkpoint), tmp_path / "runs")
    assert [t.label for t in tasks] == ["l1_filter"]   # only the missing step runs again
    assert "w4" in run_task(tasks[0], str(idx_dir)).message
    report = write_report([tmp_path / "runs"], tmp_path / "report")
    assert "accuracy-vs-score" in report.read_text()


def test_follow_up_steps_are_checked_when_the_file_loads(tmp_path):
    from fmprune.study.experiments import load_experiment

    for then, message in [('kind = "prune"', "is not one of"), ('kind = "quantize"\nbitz = 4', "unknown key"),
                          ('kind = "quantize"\ninput = "nothing"', "earlier sparsify step"),
                          ('kind = "sparsify"\namount = 2.0', "amount must be a fraction")]:
        toml = tmp_path / "bad.toml"
        toml.write_text(f'[experiment]\nname = "x"\n[[then]]\n{then}\n')
        with pytest.raises(FmpruneError, match=message):
            load_experiment(toml)


def test_train_checkpoint_of_a_recipe_is_cached_under_its_options(splits, tmp_path):
    from fmprune.run.base_model import file_checkpoint

    path = file_checkpoint(tmp_path / "x.toml", "train:lenet", None, splits, {"batch_size": 50}, quick=True)
    assert "-recipe-" in path.name and path.is_file()
    assert fmprune.load_checkpoint(path).recipe["max_iters"] == 20
    stamp = path.stat().st_mtime_ns
    assert file_checkpoint(tmp_path / "x.toml", "train:lenet", None, splits, {"batch_size": 50}, quick=True) == path
    assert path.stat().st_mtime_ns == stamp   # cached, not trained again
    with pytest.raises(FmpruneError, match="has no option"):
        file_checkpoint(tmp_path / "x.toml", "train:lenet", None, splits, {"momentum": 0.9})


def test_then_base_false_leaves_the_base_model_out(small_checkpoint, tmp_path):
    from fmprune.study.experiments import load_experiment
    from fmprune.study.sweep import plan_sweep

    toml = tmp_path / "lab.toml"
    toml.write_text(f'[experiment]\nname = "lab"\nkind = "oneshot"\ncheckpoint = "{small_checkpoint}"\n'
                    'then_base = false\n[settings]\nratio = 0.3\n[[then]]\nkind = "score"\n')
    _, tasks = plan_sweep(load_experiment(toml), str(small_checkpoint), tmp_path / "runs")
    assert [t.label for t in tasks] == ["l1_filter"] and tasks[0].then == ({"kind": "score", "name": "score",
                                                                           "input": "", "settings": {}},)
