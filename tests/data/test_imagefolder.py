"""Image folders (DIR/train/<class>/*.jpg), pretrained weights with a replaced head, training the
head only, and the transfer recipe's commands on a tiny generated folder and a tiny VGG-like model."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from fmprune.cli import cli
from fmprune.data import IMAGENET_MEAN, IMAGENET_STD, DataRequest, load_splits, sources
from fmprune.data.imagefolder import CorruptImageWarning
from fmprune.errors import DataError, FmpruneError
from fmprune.models.weights import freeze_features, load_pretrained, output_layer
from fmprune.run.checkpoint import load_checkpoint

TINY_VGG = '''
import torch
from torch import nn


class TinyVGG(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(48, 16), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def tiny_vgg(num_classes=10):
    return TinyVGG(num_classes)
'''


def _image(path: Path, colour: tuple[int, int, int], size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def make_folder(root: Path, per_class: int = 12, splits=("train",), classes=("dog", "cat")) -> Path:
    """Cats are dark, dogs bright (learnable); sizes vary, as photos do."""
    for split in splits:
        for c in classes:
            for i in range(per_class):
                shade = 40 + i if c == "cat" else 200 + i
                _image(root / split / c / f"{i}.{'png' if i % 2 else 'jpg'}", (shade, shade, shade),
                       (36 + i, 28 + 2 * i))
    return root


def test_layout_classes_resize_crop_and_imagenet_normalisation(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=3, splits=("train", "val", "test"))
    _image(root / "train" / "cat" / "half.png", (0, 0, 0), (80, 40))
    half = Image.new("RGB", (80, 40), (0, 0, 0))
    half.paste((255, 255, 255), (40, 0, 80, 40))          # right half white
    half.save(root / "train" / "cat" / "half.png")
    splits = load_splits(root, image_shape=(3, 16, 16))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7, 6, 6)
    assert splits.n_classes == 2 and splits.input_shape == (3, 16, 16) and splits.name == "imagefolder:pets"
    assert splits.train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]       # cat, dog: sorted folder names
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    first = splits.train.images[0]                                         # cat/0.jpg, a flat grey of 40
    assert torch.allclose(first, (torch.full((3, 16, 16), 40 / 255) - mean) / std, atol=0.02)
    cut = splits.train.images[3] * std + mean                              # half.png: the centre crop
    assert cut[:, :, :7].max() < 0.05 and cut[:, :, 9:].min() > 0.95       # keeps the black/white edge mid-way
    grey = load_splits(root, image_shape=(1, 8, 8))
    assert grey.input_shape == (1, 8, 8)


def test_missing_val_and_test_are_cut_off_train_with_a_seed(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=12)
    a, b = load_splits(root, image_shape=(3, 8, 8)), load_splits(root, image_shape=(3, 8, 8), val_size=3)
    assert (len(a.train), len(a.val), len(a.test)) == (20, 2, 2)
    assert (len(b.train), len(b.val), len(b.test)) == (18, 3, 3)
    assert torch.equal(load_splits(root, image_shape=(3, 8, 8)).val.images, a.val.images)   # seeded
    rows = [tuple(x.flatten()[:3].tolist()) for s in (b.train, b.val, b.test) for x in s.images]
    assert len(set(rows)) == len(rows) == 24
    with pytest.raises(DataError, match="too few to hold out"):
        load_splits(make_folder(tmp_path / "tiny", per_class=1), image_shape=(3, 8, 8))


def test_corrupt_images_are_named_and_skipped_or_fail(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=12)
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_splits(root, image_shape=(3, 8, 8))
    assert [str(w.message) for w in caught if w.category is CorruptImageWarning] == \
        [f"{bad}: cannot be read as an image (UnidentifiedImageError); skipped"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 24
    with pytest.raises(DataError, match=f"{bad}: cannot be read as an image.*--corrupt-images skip"):
        load_splits(root, image_shape=(3, 8, 8), corrupt="fail")
    request = DataRequest.of(root).with_corrupt("fail").at((3, 8, 8))   # what the CLI hands sweep workers
    with pytest.raises(DataError, match="broken.jpg"):
        pickle.loads(pickle.dumps(request)).load()


def test_folder_mistakes_are_one_line(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=3, splits=("train", "val"))
    (root / "val" / "bird").mkdir()
    with pytest.raises(DataError, match="class folders bird are not in"):
        load_splits(root, image_shape=(3, 8, 8))
    with pytest.raises(DataError, match="1 or 3 channels"):
        load_splits(make_folder(tmp_path / "b", per_class=3), image_shape=(2, 8, 8))
    # an empty class folder in train (images of that class in val): named as empty, not as "not in train"
    empty = make_folder(tmp_path / "e", per_class=3, splits=("train", "val"), classes=("dog", "cat", "bird"))
    for image in (empty / "train" / "bird").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"class folder\(s\) bird hold no images"):
        load_splits(empty, image_shape=(3, 8, 8))
    # a class missing from val, or its folder there empty: val would measure the other classes only
    lacking = make_folder(tmp_path / "l", per_class=3, splits=("train", "val", "test"), classes=("dog", "cat", "bird"))
    for image in (lacking / "val" / "bird").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"l/val: no images of class bird; val and test need every class"):
        load_splits(lacking, image_shape=(3, 8, 8))
    (lacking / "val" / "bird").rmdir()
    with pytest.raises(DataError, match=r"l/val: no images of class bird"):
        load_splits(lacking, image_shape=(3, 8, 8))


def _tiny_vgg(tmp_path: Path, classes: int = 10) -> tuple[nn.Module, str]:
    source = tmp_path / "tiny_vgg.py"
    source.write_text(TINY_VGG)
    namespace: dict = {}
    exec(compile(TINY_VGG, str(source), "exec"), namespace)
    torch.manual_seed(1)
    return namespace["tiny_vgg"](classes), f"{source}:tiny_vgg"


def test_pretrained_weights_load_with_a_replaced_head_and_only_the_head_trains(tmp_path):
    source_model, _ = _tiny_vgg(tmp_path, 10)
    torch.save(source_model.state_dict(), tmp_path / "w.pt")
    target, _ = _tiny_vgg(tmp_path, 2)
    fresh_head = target.classifier[3].weight.detach().clone()
    info = load_pretrained(target, tmp_path / "w.pt", "tiny_vgg")
    assert info["head"] == "classifier.3" and info["head_replaced"] and info["file"] == "w.pt"
    assert torch.equal(target.features[3].weight, source_model.features[3].weight)
    assert torch.equal(target.classifier[0].weight, source_model.classifier[0].weight)
    assert torch.equal(target.classifier[3].weight, fresh_head)          # 2 classes: kept fresh
    same, _ = _tiny_vgg(tmp_path, 10)
    assert not load_pretrained(same, tmp_path / "w.pt", "tiny_vgg")["head_replaced"]
    assert torch.equal(same.classifier[3].weight, source_model.classifier[3].weight)
    assert output_layer(target)[0] == "classifier.3"
    assert freeze_features(target) == "classifier"
    assert [n for n, p in target.named_parameters() if p.requires_grad] == [
        "classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias"]
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(FmpruneError, match=r"does not fit tiny_vgg \(missing classifier.0.bias, .*; unknown conv.weight\)"):
        load_pretrained(target, tmp_path / "other.pt", "tiny_vgg")
    with pytest.raises(FmpruneError, match="no such file; fmprune downloads nothing"):
        load_pretrained(target, tmp_path / "absent.pt", "tiny_vgg")


def test_transfer_recipe_commands_on_a_tiny_folder(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets", per_class=16, splits=("train", "val"))
    source_model, factory = _tiny_vgg(tmp_path, 10)
    torch.save(source_model.state_dict(), tmp_path / "pretrained.pt")
    run = CliRunner().invoke
    info = run(cli, ["data", "info", "--data-dir", str(root), "--input-shape", "3,24,24"])
    assert info.exit_code == 0, info.output
    assert "image shape (3, 24, 24), 2 classes" in info.output
    ckpt = tmp_path / "head.pt"
    trained = run(cli, ["train", "--model", factory, "--data-dir", str(root), "--input-shape", "3,24,24",
                        "--num-classes", "2", "--weights", str(tmp_path / "pretrained.pt"), "--freeze-features",
                        "--epochs", "10", "--batch-size", "8", "--lr", "0.01", "--no-input-norm", "--quiet",
                        "--out", str(ckpt)])
    assert trained.exit_code == 0, trained.output
    saved = load_checkpoint(ckpt)
    assert saved.recipe["weights"]["head_replaced"] and saved.recipe["trained_only"] == "classifier"
    assert torch.equal(saved.state_dict["features.0.weight"], source_model.features[0].weight.detach())
    assert not torch.equal(saved.state_dict["classifier.0.weight"], source_model.classifier[0].weight.detach())
    assert saved.accuracies["val"] > 0.9                         # bright against dark: the head learns it
    pruned = run(cli, ["prune", "--checkpoint", str(ckpt), "--data-dir", str(root), "--scope", "features.0,features.3",
                       "--maps-per-step", "3", "--steps", "2", "--retrain", "2", "--retrain-batch", "8",
                       "--calibration", "16", "--quiet", "--run-dir", str(tmp_path / "run")])
    assert pruned.exit_code == 0, pruned.output
    assert "maps left {'features.0': " in pruned.output
    # the export says what goes in: the folder's ImageNet transform and class order, not [0, 1]
    exported = run(cli, ["export", str(tmp_path / "run"), "--out-dir", str(tmp_path / "deploy"), "--no-onnx"])
    assert exported.exit_code == 0, exported.output
    note = json.loads((tmp_path / "deploy" / "model.json").read_text())["input"]
    assert "normalised with the ImageNet mean [0.485, 0.456, 0.406]" in note and "order: cat, dog" in note
    # every command reading the folder for this checkpoint reads it at the checkpoint's input shape
    data = ["--data-dir", str(root)]
    shapes: list = []   # the shape every read of the folder asks for
    read = sources.load_image_folder
    monkeypatch.setattr(sources, "load_image_folder", lambda path, shape, *rest: shapes.append(shape) or
                        read(path, shape, *rest))
    for args in (["oneshot", str(ckpt), "--criterion", "l1_filter", "--ratio", "0.25", "--scope", "features.0",
                  "--calibration", "16", "--run-dir", str(tmp_path / "oneshot")],
                 ["sensitivity", str(ckpt), "--criterion", "l1_filter", "--ratios", "0.5", "--scope", "features.0",
                  "--calibration", "16", "--quiet", "--out-dir", str(tmp_path / "sens")],
                 ["quantize", str(ckpt), "--calibration", "16", "--no-onnx", "--repeats", "1",
                  "--run-dir", str(tmp_path / "q")],
                 ["sparsify", "--checkpoint", str(ckpt), "--amount", "0.5", "--run-dir", str(tmp_path / "sp")],
                 ["compare", str(tmp_path / "run"), "--base", str(ckpt), "--no-scratch", "--repeats", "1",
                  "--out-dir", str(tmp_path / "cmp")]):
        shapes.clear()
        result = run(cli, args + data)
        assert result.exit_code == 0, f"{args[0]}: {result.output}"
        assert shapes and set(shapes) == {(3, 24, 24)}, args[0]
    missing = run(cli, ["train", "--model", factory, "--data-dir", str(root), "--weights", str(tmp_path / "nope.pt")])
    assert missing.exit_code != 0 and "no such file; fmprune downloads nothing" in str(missing.exception)
