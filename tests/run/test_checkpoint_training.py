import copy

import pytest
import torch

from fmprune.run.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from fmprune.errors import CheckpointError
from fmprune.models import LeNet
import fmprune
from support.fixture_data import SMALL_SPEC
from fmprune.training import TrainConfig, evaluate, train


def test_round_trip_of_a_pruned_model_keeps_sizes_outputs_and_metadata(small_trained, splits, tmp_path):
    model = copy.deepcopy(small_trained)
    graph = fmprune.trace(model, torch.zeros(1, 1, 28, 28))
    graph.remove("conv2", [1, 5])
    graph.remove("fc1", [0, 3, 23])
    graph.remove("fc1", [0])
    ckpt = make_checkpoint(model, SMALL_SPEC, graph, data_fingerprint=splits.fingerprint(),
                           accuracies={"val": 0.5}, seed=3, recipe={"epochs": 1})
    path = save_checkpoint(ckpt, tmp_path / "sub" / "p.pt")
    loaded = load_checkpoint(path)
    assert loaded.alive == {"conv2": [0, 2, 3, 4, 6, 7], "fc1": [2] + list(range(4, 23))}
    assert loaded.map_counts() == {"conv1": 6, "conv2": 6, "fc1": 20}
    assert (loaded.data_fingerprint, loaded.accuracies, loaded.seed) == (splits.fingerprint(), {"val": 0.5}, 3)
    rebuilt, rgraph = loaded.build_traced()
    x = splits.test.images[:50]
    assert torch.equal(rebuilt(x), model.eval()(x))
    assert rgraph.alive("fc1") == graph.alive("fc1")   # the unpruned numbering survives the round trip
    assert not list(tmp_path.glob("sub/*.tmp"))


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint at all", "not a readable checkpoint"),
    (None, "missing checkpoint file"),
])
def test_bad_checkpoint_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "c.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_and_foreign_files_are_refused(small_ckpt, tmp_path):
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(small_ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "f.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an fmprune checkpoint"):
        load_checkpoint(foreign)


def test_impossible_alive_maps_are_refused(small_ckpt):
    ckpt = load_checkpoint(small_ckpt)
    ckpt.alive["conv1"] = [0, 40]
    with pytest.raises(CheckpointError, match="group 'conv1' keeps maps the built model does not have \\(1 map: 40; the built group has 6\\)"):
        ckpt.build()
    ckpt.alive = {"conv7": [0]}
    with pytest.raises(CheckpointError, match="checkpoint of lenet: group 'conv7' is not in the model"):
        ckpt.build()


def test_checkpoints_of_the_first_format_still_load(tmp_path):
    """fmprune-checkpoint/1 (arch name + kept-map counts, the first maps kept) loads as the same model."""
    torch.manual_seed(0)
    model = LeNet()
    fmprune.trace(model, torch.zeros(1, 1, 28, 28)).remove("conv2", [60, 61, 62, 63])
    payload = {"format": "fmprune-checkpoint/1", "arch": "lenet", "input_shape": [1, 28, 28], "n_classes": 10,
               "map_counts": {"conv1": 32, "conv2": 60, "fc1": 1024}, "state_dict": model.state_dict(),
               "data_fingerprint": "x", "accuracies": {}, "seed": 0, "recipe": {}, "origin": {}}
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.alive == {"conv2": list(range(60))}
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(loaded.build()(x), model.eval()(x))


def test_short_training_beats_chance_clearly(small_trained, splits):
    assert evaluate(small_trained, splits.test) > 0.6   # chance is 0.1


def test_training_is_deterministic_per_seed(splits):
    def trained(seed: int) -> dict:
        torch.manual_seed(123)   # the recipe's seed must decide, not the caller's RNG state
        model = LeNet(widths=(3, 4, 8))
        train(model, splits.train.subset(300), TrainConfig(epochs=1, batch_size=50, seed=seed))
        return model.state_dict()

    a, b, c = trained(0), trained(0), trained(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_full_training_on_real_mnist_reaches_99_2_percent():
    """The base recipe on real MNIST (fetched into the test's own cache): >= 99.2 % validation."""
    from fmprune.data import load_splits
    from fmprune.models import create_model

    splits = load_splits()
    config = TrainConfig()
    torch.manual_seed(config.seed)
    model = create_model("lenet", splits.input_shape, splits.n_classes)
    train(model, splits.train, config)
    assert evaluate(model, splits.val) >= 0.992
