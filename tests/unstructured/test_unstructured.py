"""Weight and unit pruning: exact counts, deterministic ties, agreement with
torch.nn.utils.prune, masks held through optimizers, non-zero counts, sparse storage, runs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from fmprune.errors import FmpruneError, PruningError
from fmprune.models import LeNet
from fmprune.models.spec import build_model
from fmprune.unstructured import (MaskHold, SparsifyConfig, finalize, format_density_table, load_sparse,
                                  prune_weights, round_amounts, run_sparsify, save_sparse, select_units,
                                  prune_units, unit_masks, weight_density, weight_masks)
from fmprune.unstructured.masks import current_mask

from support.sparse_models import SMALL_FC, SMALL_LENET, trained_checkpoint


LAYERS = ["fc1", "fc2", "fc3", "fc4"]


def mlp(seed=0) -> nn.Module:
    """A small version of the seed study's fc network (no biases)."""
    torch.manual_seed(seed)
    return build_model(SMALL_FC)


@pytest.fixture(scope="module")
def fc_ckpt(splits, tmp_path_factory):
    return trained_checkpoint(SMALL_FC, splits, tmp_path_factory.mktemp("fc") / "fc.pt")


@pytest.fixture(scope="module")
def lenet_ckpt(splits, tmp_path_factory):
    return trained_checkpoint(SMALL_LENET, splits, tmp_path_factory.mktemp("lenet") / "lenet.pt")


def zeros(model, name) -> int:
    return int((weight_density(model)[LAYERS.index(name)].weights - weight_density(model)[LAYERS.index(name)].nonzero))


@pytest.mark.parametrize("amount", [0.0, 0.25, 0.333, 0.5, 0.9, 0.99])
def test_layer_scope_zeroes_round_k_size_in_every_layer(amount):
    model = mlp()
    prune_weights(model, LAYERS, amount, "layer")
    for name in LAYERS:
        size = model.get_submodule(name).weight.numel()
        assert zeros(model, name) == round(amount * size), name


@pytest.mark.parametrize("amount", [0.1, 0.5, 0.77, 0.95])
def test_global_scope_zeroes_round_k_size_in_total_and_prefers_small_weights(amount):
    model = mlp()
    before = {n: model.get_submodule(n).weight.detach().clone() for n in LAYERS}
    prune_weights(model, LAYERS, amount, "global")
    total = sum(w.numel() for w in before.values())
    assert sum(zeros(model, n) for n in LAYERS) == round(amount * total)
    kept = torch.cat([before[n][current_mask(model.get_submodule(n)).bool()].abs() for n in LAYERS])
    gone = torch.cat([before[n][~current_mask(model.get_submodule(n)).bool()].abs() for n in LAYERS])
    assert gone.max() <= kept.min()


def test_ties_go_in_index_order_and_repeat_exactly():
    weights = {"a": torch.ones(3, 4), "b": torch.ones(2, 5)}
    layer = weight_masks(weights, 0.5, "layer")
    assert layer["a"].flatten().tolist() == [0] * 6 + [1] * 6
    assert layer["b"].flatten().tolist() == [0] * 5 + [1] * 5
    glob = weight_masks(weights, 0.6, "global")     # 13 of 22: all of a, then the first of b
    assert glob["a"].sum() == 0 and glob["b"].flatten().tolist() == [0] + [1] * 9
    ties = torch.tensor([[0.5, -0.5, 0.1, 0.5], [-0.1, 0.5, 2.0, -0.5]])
    masks = [weight_masks({"w": ties}, 0.5, "layer")["w"] for _ in range(3)]
    assert masks[0].tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]] and all(torch.equal(m, masks[0]) for m in masks)
    units = select_units({"x": torch.tensor([1.0, 0.5, 0.5, 2.0, 0.5])}, 0.4, "layer")
    assert units == {"x": [1, 2]}


def test_magnitude_masks_equal_torch_l1_unstructured_and_global_unstructured():
    for amount in (0.3, 0.5, 0.9):
        ours, theirs = mlp(1), mlp(1)
        prune_weights(ours, LAYERS, amount, "layer")
        for name in LAYERS:
            prune.l1_unstructured(theirs.get_submodule(name), "weight", amount=amount)
            assert torch.equal(current_mask(ours.get_submodule(name)), theirs.get_submodule(name).weight_mask)
        ours, theirs = mlp(2), mlp(2)
        prune_weights(ours, LAYERS, amount, "global")
        prune.global_unstructured([(theirs.get_submodule(n), "weight") for n in LAYERS],
                                  prune.L1Unstructured, amount=amount)
        for name in LAYERS:
            assert torch.equal(current_mask(ours.get_submodule(name)), theirs.get_submodule(name).weight_mask)


def test_unit_choice_equals_torch_ln_structured_l2_dim0():
    ours, theirs = mlp(3), mlp(3)
    chosen = unit_masks(ours, ["fc1", "fc2", "fc3"], 0.6, "layer")
    for name in ("fc1", "fc2", "fc3"):
        prune.ln_structured(theirs.get_submodule(name), "weight", amount=0.6, n=2, dim=0)
        torch_rows = (theirs.get_submodule(name).weight_mask.sum(1) == 0).nonzero().flatten().tolist()
        assert chosen[name] == torch_rows
        assert torch.equal(current_mask(ours.get_submodule(name)), theirs.get_submodule(name).weight_mask)


def test_unit_masks_zero_the_bias_of_removed_units_too():
    model = LeNet(widths=(6, 8, 24))
    chosen = unit_masks(model, ["conv1", "fc1"], 0.5, "layer")
    assert len(chosen["conv1"]) == 3 and len(chosen["fc1"]) == 12
    finalize(model)
    assert model.conv1.bias[chosen["conv1"]].abs().sum() == 0
    assert model.conv1.weight[chosen["conv1"]].abs().sum() == 0
    assert model.fc1.weight[chosen["fc1"]].abs().sum() == 0


def test_random_uses_the_same_counts_seeded():
    def masks(seed):
        return weight_masks({"w": torch.randn(50, 40)}, 0.7, "layer", "random",
                            torch.Generator().manual_seed(seed))["w"]
    torch.manual_seed(0)
    a = masks(5)
    torch.manual_seed(0)
    b = masks(5)
    torch.manual_seed(0)
    c = masks(6)
    assert (a == 0).sum() == (c == 0).sum() == round(0.7 * 2000)
    assert torch.equal(a, b) and not torch.equal(a, c)


def _train_steps(model, optimizer, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_masks_hold_through_retraining_momentum_included(name):
    model = mlp(4)
    optimizer = OPTIMIZERS[name](model.parameters())
    _train_steps(model, optimizer, 5)            # momentum / moments now non-zero everywhere
    hold = MaskHold(model, optimizer)
    for amount in round_amounts(0.8, 2):        # Han: two rounds, retraining after each
        prune_weights(model, LAYERS, amount, "global")
        hold.enforce()
        _train_steps(model, optimizer, 10, seed=1)
        for n in LAYERS:
            module = model.get_submodule(n)
            pruned = current_mask(module) == 0
            assert module.weight_orig[pruned].abs().sum() == 0
            assert all(v[pruned].abs().sum() == 0 for v in optimizer.state[module.weight_orig].values()
                       if isinstance(v, torch.Tensor) and v.shape == pruned.shape)
        total = sum(m.weight.numel() for m in (model.get_submodule(n) for n in LAYERS))
        assert sum(zeros(model, n) for n in LAYERS) == round(amount * total)
    finalize(model)
    assert sum(zeros(model, n) for n in LAYERS) == round(0.8 * total)
    assert not any(n.endswith("_orig") for n, _ in model.named_parameters())


def test_without_the_hold_momentum_moves_pruned_weights():
    """The check above can fail: torch's mask alone leaves weight_orig to the optimizer."""
    model = mlp(4)
    optimizer = OPTIMIZERS["sgd-momentum"](model.parameters())
    _train_steps(model, optimizer, 5)
    prune_weights(model, LAYERS, 0.5, "global")
    model.fc1.weight_orig.data.mul_(model.fc1.weight_mask)
    _train_steps(model, optimizer, 3, seed=1)
    assert model.fc1.weight_orig[model.fc1.weight_mask == 0].abs().sum() > 0


def test_rounds_are_cumulative_and_reach_the_final_amount():
    assert round_amounts(0.9, 3) == pytest.approx([0.3, 0.6, 0.9])
    model = mlp(5)
    prune_weights(model, LAYERS, 0.3, "layer")
    first = {n: current_mask(model.get_submodule(n)).clone() for n in LAYERS}
    with torch.no_grad():   # weights change between rounds (retraining): pruned ones stay pruned
        for n in LAYERS:
            model.get_submodule(n).weight_orig.mul_(torch.rand_like(first[n]) + 0.5)
    prune_weights(model, LAYERS, 0.6, "layer")
    for n in LAYERS:
        mask = current_mask(model.get_submodule(n))
        assert torch.all(mask <= first[n]) and (mask == 0).sum() == round(0.6 * mask.numel())


def test_thesis_lenet_90_percent_global_leaves_327350_weights():
    model = LeNet()
    prune_weights(model, ["conv1", "conv2", "fc1", "fc2"], 0.9, "global")
    table = format_density_table(weight_density(finalize(model)))
    assert "327,350" in table and "3,273,504" in table and "10.00%" in table
    assert table.splitlines()[-1].split()[:3] == ["total", "3,273,504", "327,350"]


def test_bad_amounts_and_layers_are_one_line_errors():
    for amount in (1.0, -0.1, 1.5):
        with pytest.raises(PruningError, match="amount must be a fraction in"):
            weight_masks({"w": torch.ones(3)}, amount)
    with pytest.raises(PruningError, match="all 5 units of layer 'x'"):
        select_units({"x": torch.rand(5)}, 0.95, "layer")
    with pytest.raises(PruningError, match="every unit of layer 'b'"):
        select_units({"a": torch.ones(4), "b": torch.zeros(2)}, 0.4, "global")
    with pytest.raises(FmpruneError, match="unknown method"):
        SparsifyConfig(method="l1")
    with pytest.raises(FmpruneError, match="give --retrain"):
        SparsifyConfig(rounds=3)
    with pytest.raises(PruningError, match="names a layer twice"):
        SparsifyConfig(layers="fc1,fc1")


def test_sparse_storage_round_trips_and_is_smaller(lenet_ckpt, tmp_path):
    from fmprune.run.checkpoint import load_checkpoint
    from fmprune.unstructured.modelio import save_model
    ckpt = load_checkpoint(lenet_ckpt)
    model, graph = ckpt.build_traced()
    prune_weights(model, ["conv1", "conv2", "fc1", "fc2"], 0.9, "global")
    finalize(model)
    dense_path = save_model(model, ckpt, graph, tmp_path / "dense.pt")
    stored = save_sparse(load_checkpoint(dense_path), tmp_path / "model.sparse.pt")
    assert stored.bytes < 0.4 * stored.dense_bytes and "fc1.weight" in stored.csr_tensors
    back = load_sparse(stored.path).build()
    x = torch.rand(7, 1, 28, 28)
    assert torch.equal(back(x), model(x))
    assert all(torch.equal(t, model.state_dict()[k]) for k, t in back.state_dict().items())


def test_run_writes_a_plain_sparse_model_with_retraining_rounds(lenet_ckpt, splits, tmp_path):
    from fmprune.run.checkpoint import load_checkpoint
    config = SparsifyConfig(method="magnitude", scope="global", amount=0.8, retrain=5, rounds=2,
                            optimizer="sgd", retrain_lr=1e-3, eval_size=100)
    summary = run_sparsify(lenet_ckpt, splits, config, tmp_path / "run")
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "summary.json", "model.pt", "run.log"} <= files
    assert [r.amount for r in summary.rounds] == pytest.approx([0.4, 0.8])
    assert summary.nonzero_after == summary.weights - round(0.8 * summary.weights)
    ckpt = load_checkpoint(tmp_path / "run" / "model.pt")
    assert not any(k.endswith(("_orig", "_mask")) for k in ckpt.state_dict)
    model = ckpt.build()
    assert sum(r.nonzero for r in weight_density(model)) == summary.nonzero_after
    assert len((tmp_path / "run" / "run.log").read_text().splitlines()) == 4
    again = run_sparsify(lenet_ckpt, splits, config, tmp_path / "run")   # finished: its summary again
    assert again.nonzero_after == summary.nonzero_after and len(again.rounds) == 2


def test_random_run_is_reproducible_and_worse_than_magnitude(lenet_ckpt, splits, tmp_path):
    runs = {}
    for name, method in (("m", "magnitude"), ("r1", "random"), ("r2", "random")):
        runs[name] = run_sparsify(lenet_ckpt, splits, SparsifyConfig(method=method, amount=0.9), tmp_path / name)
    assert runs["r1"].final_accuracy == runs["r2"].final_accuracy
    assert runs["m"].nonzero_after == runs["r1"].nonzero_after
    assert runs["m"].final_accuracy > runs["r1"].final_accuracy


def test_unknown_layer_fails_before_anything_is_written(lenet_ckpt, splits, tmp_path):
    with pytest.raises(PruningError, match="unknown layer 'fc9'"):
        run_sparsify(lenet_ckpt, splits, SparsifyConfig(layers="fc1,fc9"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _example():
    return torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("spec,scope", [(SMALL_FC, "layer"), (SMALL_FC, "global"), (SMALL_LENET, "layer")])
def test_unit_removal_zeroed_equals_shrunk(spec, scope):
    import fmprune
    torch.manual_seed(7)
    shrunk = build_model(spec).eval()
    zeroed = copy.deepcopy(shrunk)
    graph = fmprune.trace(shrunk, torch.zeros(1, 1, 28, 28))
    removed = prune_units(graph, graph.names, 0.5, scope)
    masked = unit_masks(zeroed, graph.names, 0.5, scope)
    assert removed == masked
    assert all(len(v) for v in removed.values())
    assert graph.sizes() == {n: size - len(removed[n]) for n, size in
                             fmprune.trace(build_model(spec), torch.zeros(1, 1, 28, 28)).sizes().items()}
    with torch.no_grad():
        assert torch.allclose(shrunk(_example()), finalize(zeroed)(_example()), atol=1e-6)
    assert sum(p.numel() for p in shrunk.parameters()) < sum(p.numel() for p in zeroed.parameters())


def test_unit_run_shrinks_the_model_and_retrains_through_the_graph(fc_ckpt, splits, tmp_path):
    from fmprune.run.checkpoint import load_checkpoint
    config = SparsifyConfig(method="unit", scope="layer", amount=0.5, retrain=3, rounds=2, eval_size=100)
    summary = run_sparsify(fc_ckpt, splits, config, tmp_path / "run")
    assert summary.units_before == {"fc1": 40, "fc2": 30, "fc3": 20}
    assert summary.units_after == {"fc1": 20, "fc2": 15, "fc3": 10}
    assert summary.params_after == 784 * 20 + 20 * 15 + 15 * 10 + 10 * 10
    model = load_checkpoint(tmp_path / "run" / "model.pt").build()
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [20, 15, 10, 10]
    assert summary.nonzero_after == summary.params_after


def test_unit_pruning_refuses_the_output_layer_and_emptying_a_layer(fc_ckpt, splits, tmp_path):
    with pytest.raises(FmpruneError, match="'fc4'"):
        run_sparsify(fc_ckpt, splits, SparsifyConfig(method="unit", layers="fc4"), tmp_path / "a")
    with pytest.raises(PruningError, match="all 20 units of layer 'fc3'"):
        run_sparsify(fc_ckpt, splits, SparsifyConfig(method="unit", amount=0.98), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_sparse_storage_keeps_dense_what_csr_would_not_shrink_and_refuses_bad_files(tmp_path):
    from fmprune.errors import CheckpointError
    from fmprune.unstructured.storage import decode_tensor, encode_tensor
    half = torch.randn(30, 40) * weight_masks({"w": torch.randn(30, 40)}, 0.3)["w"]   # 70 % dense
    assert encode_tensor(half)["layout"] == "dense"
    sparse = torch.randn(30, 40) * weight_masks({"w": torch.randn(30, 40)}, 0.5)["w"]
    entry = encode_tensor(sparse)
    assert entry["layout"] == "csr" and entry["col"].dtype == torch.int16
    assert torch.equal(decode_tensor(entry), sparse)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable sparse checkpoint"):
        load_sparse(tmp_path / "bad.pt")
    torch.save({"format": "fmprune-sparse/1", "checkpoint": {}, "tensors": {"w": {**entry, "col": entry["col"] + 99}}},
               tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="malformed sparse checkpoint"):
        load_sparse(tmp_path / "damaged.pt")
