"""Latency tables (interpolation against hand values, prediction and per-map savings consistent
with removal, the cache), latency as a cost (target, term, per-cost) and --round-to, on tiny
models; timings are few and small so the tests stay fast and do not depend on the machine's noise."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import fmprune
from fmprune.errors import FmpruneError
from fmprune.latency import LatencyTable, LayerLatency, _bracket, latency_table
from fmprune.run.checkpoint import load_checkpoint
from fmprune.run.config import PruneConfig
from support.entry_point import run_cli


class Tiny(nn.Module):
    """conv 3->8 (BN, ReLU, pool) -> conv 8->6 (ReLU, global pool) -> fc 6->4: three kinds of
    layer, a tied BatchNorm and an original size (6) that is not a multiple of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.conv2(x)).mean((2, 3))
        return self.fc(x)


def tiny():
    torch.manual_seed(0)
    model = Tiny().eval()
    return model, fmprune.trace(model, torch.zeros(1, 3, 8, 8))


def hand_table(graph, runtime: str = "eager") -> LatencyTable:
    """A table whose numbers are written by hand: ms = in + 2·out at every grid point (exact for
    bilinear interpolation), a rest of 1 ms at every volume."""
    widths = graph.layer_widths()
    layers = {}
    for name, (n_in, n_out) in widths.items():
        ins, outs = sorted({1, n_in}), sorted({1, n_out})
        layers[name] = LayerLatency(name, "hand", ins, outs, [[i + 2 * o for o in outs] for i in ins],
                                    [[0.0] * len(outs) for _ in ins])
    base = sum(i + 2 * o for i, o in widths.values())
    volume = {n: 1 for n in widths}
    return LatencyTable("tiny", runtime, 1, "cpu", torch.__version__, [0.5, 1.0], 1, "wall", dict(widths),
                        layers, base + 1.0, 0.0, volume, [(0.0, 1.0), (1.0, 1.0)])


def test_bilinear_interpolation_against_hand_values():
    t = LayerLatency("l", "Conv2d", [2, 4], [4, 8], [[1.0, 2.0], [3.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]])
    assert t.at(2, 4) == 1.0 and t.at(4, 8) == 5.0
    assert t.at(3, 6) == pytest.approx(0.25 * (1 + 2 + 3 + 5))          # the middle: the mean of the corners
    assert t.at(3, 4) == pytest.approx(2.0) and t.at(4, 5) == pytest.approx(3.5)
    assert t.at(5, 8) == pytest.approx(-0.5 * 2 + 1.5 * 5)              # beyond the grid: the end segment
    assert t.at(1, 4) == pytest.approx(0.0)                              # never below zero (-1 extrapolated)
    tied = LayerLatency("bn", "BatchNorm2d", [2, 8], [8], [[1.0], [4.0]], [[0.0], [0.0]], tied=True)
    assert tied.at(4, 4) == pytest.approx(2.0)                           # one axis: linear in the input width


def test_two_grid_points_of_one_size_interpolate_without_dividing_by_zero():
    """Uniform cuts of a tiny model can round to the same size: the lower point's value is taken."""
    assert _bracket([1, 4, 4], 5.0) == (1, 2, 0.0)   # beyond the last two, which are equal
    assert _bracket([2, 2], 3.0) == (0, 1, 0.0)
    assert _bracket([2, 6], 3.0) == (0, 1, 0.25)


def test_measured_table_predicts_the_base_and_each_saving_exactly(tmp_path):
    model, graph = tiny()
    table = latency_table(model, graph, "tiny", batch=2, grid="0.5", repeats=3, warmup=1, cache_dir=tmp_path)
    assert set(table.layers) == {"conv1", "bn1", "conv2", "fc"}
    assert table.layers["conv1"].ins == [3] and table.layers["conv1"].outs == [4, 8]   # the image stays
    assert table.layers["bn1"].tied and table.layers["bn1"].ins == [4, 8]
    assert table.layers["fc"].outs == [4] and table.layers["fc"].ins == [3, 6]
    # two uniform cuts timed; feature volume = output positions (conv1, bn1: 64 each, conv2: 16, fc: 1)
    assert [v for v, _ in table.rest] == pytest.approx([(4 * 64 + 4 * 64 + 3 * 16 + 4) / (8 * 64 + 8 * 64 + 6 * 16 + 4),
                                                        1.0])
    assert table.predict(graph) == pytest.approx(table.measured_ms)   # the rest closes the base exactly
    before = table.predict(graph)
    saving = table.map_saving(graph, "conv2")
    graph.remove("conv2", [0])
    assert table.predict(graph) == pytest.approx(before - saving)
    assert all(s >= 0 for t in table.layers.values() for row in t.spread for s in row)
    assert "noise: spread" in table.format() and "conv2 (Conv2d, base 8x6" in table.format()


def test_cache_hit_and_refresh(tmp_path):
    model, graph = tiny()
    first = latency_table(model, graph, "tiny", batch=1, grid="1", repeats=2, warmup=0, cache_dir=tmp_path)
    assert not first.cached and len(list(tmp_path.iterdir())) == 1
    again = latency_table(model, graph, "tiny", batch=1, grid="1", repeats=2, warmup=0, cache_dir=tmp_path)
    assert again.cached and again == first
    other_batch = latency_table(model, graph, "tiny", batch=3, grid="1", repeats=2, warmup=0, cache_dir=tmp_path)
    assert not other_batch.cached and len(list(tmp_path.iterdir())) == 2
    fresh = latency_table(model, graph, "tiny", batch=1, grid="1", repeats=2, warmup=0, cache_dir=tmp_path,
                          refresh=True)
    assert not fresh.cached
    assert json.loads(first.to_json())["batch"] == 1
    # the wall clock depends on the threads torch computes with: another count is another table
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        other_threads = latency_table(model, graph, "tiny", batch=1, grid="1", repeats=2, warmup=0, cache_dir=tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert not other_threads.cached and len(list(tmp_path.iterdir())) == 3
    for path in tmp_path.iterdir():   # a damaged cache file is measured again, not a traceback
        path.write_text("{not json")
    assert not latency_table(model, graph, "tiny", batch=1, grid="1", repeats=2, warmup=0, cache_dir=tmp_path).cached


@pytest.mark.parametrize("kwargs, message", [
    ({"grid": "0,0.5"}, "grid fractions must lie in (0, 1]"),
    ({"grid": "a,b"}, "grid must be fractions"),
    ({"runtime": "tpu"}, "unknown runtime 'tpu'"),
    ({"batch": 0}, "batch and repeats must be positive"),
    ({"clock": "sundial"}, "unknown clock"),
])
def test_bad_input_is_one_line(kwargs, message, tmp_path):
    model, graph = tiny()
    with pytest.raises(FmpruneError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        latency_table(model, graph, "tiny", cache_dir=tmp_path, **kwargs)
    assert "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())


def flat_table(graph) -> LatencyTable:
    """A table like onnxruntime's on ResNet-20: conv1's time is flat from 4 to 8 output maps (a
    blocked layout pads them) while the rest, read by conv1's output volume, grows as maps go:
    predicted ms = conv1(out) + 2·(1 - out/8); 4.0 at 8 maps, 5.0 at 4, 3.5 at 2. The other
    layers cost nothing."""
    widths = graph.layer_widths()
    zero = {name: LayerLatency(name, "hand", sorted({1, i}), sorted({1, o}), [[0.0] * len({1, o})] * len({1, i}),
                               [[0.0] * len({1, o})] * len({1, i})) for name, (i, o) in widths.items()}
    zero["conv1"] = LayerLatency("conv1", "hand", [3], [1, 4, 8], [[1.0, 4.0, 4.0]], [[0.0] * 3])
    volume = {n: int(n == "conv1") for n in widths}
    return LatencyTable("tiny", "onnxruntime", 1, "cpu", torch.__version__, [0.5, 1.0], 1, "cpu", dict(widths),
                        zero, 4.0, 0.0, volume, [(0.0, 2.0), (1.0, 0.0)])


def test_walk_predicts_every_prefix_as_the_pruned_model():
    model, graph = tiny()
    table = flat_table(graph)
    walk = table.walk(graph)
    assert walk.ms == pytest.approx(table.predict(graph)) == pytest.approx(4.0)
    pruned = copy.deepcopy(model)
    pruned_graph = fmprune.trace(pruned, torch.zeros(1, 3, 8, 8))
    for group in ["conv1", "conv2", "conv1", "conv1", "conv2", "conv1", "conv1", "conv1"]:
        predicted = walk.remove(group)
        pruned_graph.remove(group, [0])
        assert predicted == pytest.approx(table.predict(pruned_graph))
    assert pruned_graph.sizes()["conv1"] == 2 and predicted == pytest.approx(3.5)
    assert graph.sizes() == {"conv1": 8, "conv2": 6}   # the walk leaves the model alone


def test_a_latency_step_stops_where_the_table_predicts_the_target_not_where_one_map_savings_add_up():
    from fmprune.engine.selection import Selected
    from fmprune.engine.targets import trim_to_target
    from fmprune.latency import LatencyTarget
    model, graph = tiny()
    table = flat_table(graph)
    assert table.map_saving(graph, "conv1") == pytest.approx(-0.25)   # at 8 maps, one fewer is slower
    chosen = [Selected("conv1", i, i, 0.0) for i in range(7)]
    # 90 % of 4.0 ms: conv1 at 2 maps (3.5 ms) is the first that meets it; summed one-map savings
    # (-0.25 each) never do, and a step trusting them took all 7 (conv1 at 1 map)
    kept = trim_to_target(graph, chosen, (graph.total_params(), graph.total_macs()), None, None,
                          LatencyTarget(table, 0.9, 4.0))
    assert len(kept) == 6


def test_pruner_latency_target_meets_the_prediction():
    model, graph = tiny()
    table = hand_table(graph)
    pruner = fmprune.Pruner(model, torch.zeros(1, 3, 8, 8), criterion="l1_filter", graph=graph, latency_table=table)
    base = table.predict(graph)
    pruner.step(target_latency=0.6)
    assert table.predict(graph) <= 0.6 * base
    with pytest.raises(FmpruneError, match="target latency must be a fraction"):
        pruner.step(target_latency=1.5)
    plain = fmprune.Pruner(*tiny()[:1], torch.zeros(1, 3, 8, 8), criterion="l1_filter")
    with pytest.raises(FmpruneError, match="needs a latency table"):
        plain.step(target_latency=0.5)


def test_latency_term_and_per_cost_use_the_saving_of_one_map():
    model, graph = tiny()
    table = hand_table(graph)
    # hand table: conv1's map saves 2 (conv1 out) + 1 + 2 (bn1 in and out) + 1 (conv2 in) = 6 ms,
    # conv2's 2 + 1 (fc in) = 3 ms; the rest does not move
    assert table.map_saving(graph, "conv1") == pytest.approx(6.0)
    assert table.map_saving(graph, "conv2") == pytest.approx(3.0)
    plain = fmprune.Pruner(model, torch.zeros(1, 3, 8, 8), criterion="l1_filter", graph=graph)
    raw = plain.scores()
    termed = fmprune.Pruner(model, torch.zeros(1, 3, 8, 8), criterion="l1_filter", graph=graph,
                            latency_table=table, latency_lambda=0.1).scores()
    assert torch.allclose(termed["conv1"], raw["conv1"] - 0.6) and torch.allclose(termed["conv2"], raw["conv2"] - 0.3)
    per = fmprune.Pruner(model, torch.zeros(1, 3, 8, 8), criterion="l1_filter", graph=graph,
                         latency_table=table, per_cost="latency").scores()
    assert torch.allclose(per["conv1"], raw["conv1"] / (6 / 4.5)) and torch.allclose(per["conv2"], raw["conv2"] / (3 / 4.5))
    with pytest.raises(FmpruneError, match="need latency_table"):
        fmprune.Pruner(model, torch.zeros(1, 3, 8, 8), criterion="l1_filter", per_cost="latency")


def test_round_to_keeps_every_group_a_multiple_or_its_original_size():
    model, graph = tiny()
    pruner = fmprune.Pruner(model, torch.zeros(1, 3, 8, 8), criterion="l1_filter", graph=graph, round_to=4)
    removed = pruner.step(maps=1)          # one map asked: the whole chunk down to the next multiple
    sizes = graph.sizes()
    assert len(removed) in (2, 4) and sorted(sizes.values()) in ([4, 8], [4, 6])
    removed = pruner.step(maps=1)          # the other group's chunk; both now at 4
    assert graph.sizes() == {"conv1": 4, "conv2": 4}
    assert pruner.step(maps=1) == [] and graph.sizes() == {"conv1": 4, "conv2": 4}   # nothing smaller allowed
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
    with pytest.raises(FmpruneError, match="round_to must be a positive integer"):
        fmprune.Pruner(copy.deepcopy(model), torch.zeros(1, 3, 8, 8), criterion="l1_filter", round_to=0)


def test_round_to_with_a_target_stops_after_whole_chunks():
    model, graph = tiny()
    pruner = fmprune.Pruner(model, torch.zeros(1, 3, 8, 8), criterion="l1_filter", graph=graph, round_to=2)
    pruner.step(target_macs=0.7)
    assert all(size % 2 == 0 for size in graph.sizes().values())
    assert graph.total_macs() <= 0.7 * pruner.base_macs


def test_prune_run_stops_at_the_predicted_latency_and_reports_both(small_ckpt, splits, tmp_path, monkeypatch):
    """fmprune prune's loop with a latency target: a hand table (no timing noise) decides where it
    stops; the summary holds predicted and measured latency of base and final model."""
    from fmprune.run import loop
    from fmprune.run.config import PruneConfig

    tables = []

    def fake_table(model, graph, name, *args, **kwargs):
        tables.append(hand_table(graph))
        return tables[-1]
    monkeypatch.setattr(loop, "latency_table", fake_table)
    config = PruneConfig(criterion="l1_filter", target_latency=0.7, round_to=2, maps_per_step=4, eval_size=50,
                         calibration=50)
    summary = fmprune.run_pruning(small_ckpt, splits, config, tmp_path / "run")
    table = tables[0]
    base_ms = table.measured_ms
    lat = summary.extra["latency"]
    assert lat["base_predicted_ms"] == pytest.approx(base_ms)
    assert lat["final_predicted_ms"] <= 0.7 * base_ms
    assert lat["base_measured_ms"] > 0 and lat["final_measured_ms"] > 0
    assert summary.stop_reason == "target size reached"
    assert all(n % 2 == 0 or n == full for n, full in zip(summary.maps_left.values(), (6, 8, 24)))
    with pytest.raises(FmpruneError, match="round to must be a positive"):
        PruneConfig(round_to=0)
    with pytest.raises(FmpruneError, match="do not go together"):
        PruneConfig(round_to=4, rank_once=True)


def test_sweep_files_take_the_latency_keys(tmp_path):
    from fmprune.study.experiments import load_experiment

    toml = tmp_path / "lat.toml"
    toml.write_text('''[experiment]
name = "lat"
[settings]
criterion = "taylor"
latency_runtime = "onnxruntime"
latency_batch = 8
per_cost = "latency"
[axes]
target_latency = [0.5, 0.7]
round_to = [1, 8]
''')
    experiment = load_experiment(toml)
    labels = sorted(label for label, _ in experiment.runs)
    assert labels == ["latency0.5+round1", "latency0.5+round8", "latency0.7+round1", "latency0.7+round8"]
    config = dict(experiment.runs)["latency0.7+round8"]
    assert (config.target_latency, config.round_to, config.latency_runtime, config.latency_batch) == (0.7, 8, "onnxruntime", 8)
    toml.write_text(toml.read_text().replace("[0.5, 0.7]", "[0.5, 1.5]"))
    with pytest.raises(FmpruneError, match="target latency must be"):
        load_experiment(toml)


def test_cli_latency_table_prints_the_table_and_its_noise_then_reads_the_cache(small_ckpt, monkeypatch, capsys):

    args = ["latency-table", small_ckpt, "--batch", "2", "--grid", "0.5", "--repeats", "2", "--quiet"]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert out.startswith("latency table: lenet, runtime eager, batch 2") and "(cached)" not in out.splitlines()[0]
    assert "conv2 (Conv2d, base 6x8;" in out and "noise: spread" in out and "rest by feature volume" in out
    code, again, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0 and "(cached)" in again.splitlines()[0]
    for bad, message in ((["--grid", "1.5"], "grid fractions must lie in (0, 1]"),
                         (["--runtime", "tpu"], "Invalid value for '--runtime'"),
                         (["--runtime", "onnxruntime", "--device", "cuda"], "runs on the CPU only")):
        code, out, err = run_cli([*args[:2], *bad], monkeypatch, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out


def test_cli_prune_round_to_and_latency_target(small_ckpt, idx_dir, tmp_path, monkeypatch, capsys):
    """fmprune prune --round-to 2 --target-latency: exact sizes, and the closing latency line."""
    from fmprune.run import loop

    monkeypatch.setattr(loop, "latency_table", lambda model, graph, *a, **k: hand_table(graph))
    code, out, err = run_cli(["prune", "--checkpoint", small_ckpt, "--data-dir", idx_dir, "--run-dir", tmp_path / "run",
                              "--criterion", "l1_filter", "--round-to", "2", "--target-latency", "0.7",
                              "--maps-per-step", "3", "--eval-size", "50", "--quiet"], monkeypatch, capsys)
    assert code == 0, err
    left = json.loads((tmp_path / "run" / "summary.json").read_text())["maps_left"]
    assert all(n % 2 == 0 for n in left.values()) and left != {"conv1": 6, "conv2": 8, "fc1": 24}
    assert "latency (eager, batch 1, cpu, wall clock): predicted" in out and "measured" in out


def test_round_to_with_an_accuracy_floor_backs_off_to_one_chunk_and_stops(small_ckpt, splits, tmp_path):
    """min_accuracy above anything a removal keeps: the back-off halves the step until a whole
    chunk per group is all that is left to try, then stops (it used to retry that chunk forever)."""
    floor = load_checkpoint(small_ckpt).accuracies["val"]   # the base's own: any loss reverts
    config = PruneConfig(criterion="l1_filter", round_to=4, maps_per_step=16, min_accuracy=floor, calibration=50)
    summary = fmprune.run_pruning(small_ckpt, splits, config, tmp_path / "run")
    assert summary.stop_reason == f"accuracy would fall under {floor}"


def test_a_size_target_below_what_round_to_allows_is_refused(small_ckpt, splits, tmp_path):
    """round_to=16 keeps at least 16 maps per group: a target only one map per group could reach
    is refused up front, by the Pruner and by the run, naming round_to."""
    model = load_checkpoint(small_ckpt).build()
    pruner = fmprune.Pruner(model, torch.zeros(1, 1, 28, 28), criterion="l1_filter", round_to=16)
    with pytest.raises(FmpruneError, match="round_to=16 maps per group"):
        pruner.step(target_macs=0.5)   # one map per group could reach it
    config = PruneConfig(criterion="l1_filter", round_to=16, target_macs=0.5, calibration=50)
    with pytest.raises(FmpruneError, match="--round-to 16 maps per layer"):
        fmprune.run_pruning(small_ckpt, splits, config, tmp_path / "run")


def test_pruning_for_onnxruntime_latency_keeps_widths_multiples_of_8_unless_told():
    """onnxruntime's blocked layout runs widths that are not multiples of 8 slower than the
    unpruned model (docs/latency.md): pruning for its latency rounds to 8 by itself; a round_to
    given, another runtime, a run without a latency goal or a ranking made once keep theirs."""
    from fmprune.runtimes import channel_multiple
    assert channel_multiple("onnxruntime") == 8 and channel_multiple("onnxruntime", "cuda:0") == 1
    assert channel_multiple("eager") == channel_multiple("eager-cl") == channel_multiple("compile") == 1
    x = torch.zeros(1, 3, 8, 8)
    model, graph = tiny()
    assert fmprune.Pruner(model, x, criterion="l1_filter", graph=graph, latency_table=flat_table(graph)).round_to == 8
    model, graph = tiny()
    assert fmprune.Pruner(model, x, criterion="l1_filter", graph=graph, latency_table=flat_table(graph),
                          round_to=1).round_to == 1
    model, graph = tiny()
    assert fmprune.Pruner(model, x, criterion="l1_filter", graph=graph, latency_table=hand_table(graph)).round_to == 1
    assert fmprune.Pruner(tiny()[0], x, criterion="l1_filter").round_to == 1
    ort = {"target_latency": 0.7, "latency_runtime": "onnxruntime"}
    assert PruneConfig(**ort).rounding == 8 and PruneConfig(**ort, latency_lambda=0.1).rounding == 8
    assert PruneConfig(**ort, round_to=1).rounding == 1 and PruneConfig(**ort, round_to=4).rounding == 4
    assert PruneConfig(**ort, rank_once=True).rounding == 1
    assert PruneConfig(target_latency=0.7).rounding == 1                            # eager
    assert PruneConfig(target_macs=0.5, latency_runtime="onnxruntime").rounding == 1   # no latency goal
    assert PruneConfig(**ort, latency_device="cuda").rounding == 1


def test_cli_prune_for_onnxruntime_rounds_to_8_and_says_so(small_ckpt, idx_dir, tmp_path, monkeypatch, capsys):
    """fmprune prune --target-latency on onnxruntime, no --round-to: every width a multiple of 8 or
    its original size, and a line saying why; --round-to 1 turns it off (and the line)."""
    from fmprune.run import loop

    monkeypatch.setattr(loop, "latency_table", lambda model, graph, *a, **k: hand_table(graph, "onnxruntime"))
    monkeypatch.setattr(loop, "measure_model", lambda *a, **k: [0.001])   # timing is not what this tests
    common = ["prune", "--checkpoint", small_ckpt, "--data-dir", idx_dir, "--criterion", "l1_filter",
              "--target-latency", "0.7", "--latency-runtime", "onnxruntime", "--maps-per-step", "3",
              "--eval-size", "50", "--quiet"]
    code, out, err = run_cli([*common, "--run-dir", tmp_path / "auto"], monkeypatch, capsys)
    assert code == 0, err
    left = json.loads((tmp_path / "auto" / "summary.json").read_text())["maps_left"]
    assert left["fc1"] in (8, 16) and left["conv1"] == 6 and left["conv2"] == 8   # 6 < 8 and 8 stay whole
    assert "widths kept multiples of 8: onnxruntime runs other widths slower" in out
    code, out, err = run_cli([*common, "--round-to", "1", "--run-dir", tmp_path / "any"], monkeypatch, capsys)
    assert code == 0, err
    left = json.loads((tmp_path / "any" / "summary.json").read_text())["maps_left"]
    assert left["conv2"] < 8   # unrounded, the same run cuts conv2 below its chunk
    assert "widths kept multiples" not in out
