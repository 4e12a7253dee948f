"""CIFAR-10/100 readers on files written here in the exact distribution formats, the MNIST
3x32x32 adapter, and batch augmentation."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fmprune.data import Augmentation, adapt, load_splits, parse_data_dir
from fmprune.errors import DataError
from fmprune.training import BatchStream

from support.fixture_data import write_idx_dataset


class Py2Pickler(pickle._Pickler):
    """Pickles as CIFAR's Python 2 cPickle did: protocol 2, byte strings as (BIN)STRING opcodes,
    numpy 1.x module names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def make_images(n: int, seed: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 3072 bytes (R, G, B planes) whose first red pixel encodes the image's index."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    images[:, 0] = np.arange(n) % 256
    return images, rng.integers(0, classes, n)


def write_cifar(root: Path, dataset: str, fmt: str, per_batch: int = 60, n_test: int = 40) -> dict:
    """One distribution in its standard folder under ``root``; returns the written arrays."""
    classes = 10 if dataset == "cifar10" else 100
    folder = {("cifar10", "python"): "cifar-10-batches-py", ("cifar10", "binary"): "cifar-10-batches-bin",
              ("cifar100", "python"): "cifar-100-python", ("cifar100", "binary"): "cifar-100-binary"}[(dataset, fmt)]
    d = root / folder
    d.mkdir(parents=True)
    names = ([f"data_batch_{i}" for i in range(1, 6)] if dataset == "cifar10" else ["train"])
    n_train = per_batch * 5
    train_x, train_y = make_images(n_train, 1, classes)
    test_x, test_y = make_images(n_test, 2, classes)
    chunks = np.array_split(np.arange(n_train), len(names))
    files = [(n, train_x[c], train_y[c]) for n, c in zip(names, chunks)]
    files.append(("test_batch" if dataset == "cifar10" else "test", test_x, test_y))
    for name, x, y in files:
        if fmt == "python":
            key = b"labels" if dataset == "cifar10" else b"fine_labels"
            batch = {b"batch_label": name.encode(), key: [int(v) for v in y], b"data": x,
                     b"filenames": [f"img_{i}.png".encode() for i in range(len(x))]}
            if dataset == "cifar100":
                batch[b"coarse_labels"] = [int(v) // 5 for v in y]
            (d / name).write_bytes(py2_pickle(batch))
        else:
            labels = y[:, None].astype(np.uint8)
            if dataset == "cifar100":
                labels = np.concatenate([labels // 5, labels], axis=1)
            (d / f"{name}.bin").write_bytes(np.concatenate([labels, x], axis=1).tobytes())
    if fmt == "python":
        meta = "batches.meta" if dataset == "cifar10" else "meta"
        (d / meta).write_bytes(py2_pickle({b"label_names": [f"c{i}".encode() for i in range(classes)]}))
    return {"dir": d, "train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


FORMATS = [("cifar10", "python"), ("cifar10", "binary"), ("cifar100", "python"), ("cifar100", "binary")]


@pytest.mark.parametrize("dataset, fmt", FORMATS)
def test_all_four_distributions_read_in_order_with_the_last_tenth_held_out(tmp_path, dataset, fmt):
    w = write_cifar(tmp_path, dataset, fmt)
    for where in (w["dir"], tmp_path):            # the extracted folder, or its parent
        s = load_splits(where)
        assert (len(s.train), len(s.val), len(s.test)) == (270, 30, 40)
        assert s.input_shape == (3, 32, 32)
        assert s.n_classes == (10 if dataset == "cifar10" else 100) and s.name == dataset
        assert s.augmentation == ("crop", "flip")
        assert torch.equal(s.train.labels, torch.from_numpy(w["train_y"][:270]).long())
        assert torch.equal(s.val.labels, torch.from_numpy(w["train_y"][270:]).long())
        assert torch.equal(s.test.labels, torch.from_numpy(w["test_y"]).long())
        assert s.train.images.dtype == torch.float32 and s.train.labels.dtype == torch.int64
        # pixel (c, row, col) is byte c*1024 + row*32 + col of the record
        i, c, r, col = 123, 2, 5, 17
        assert s.train.images[i, c, r, col].item() == pytest.approx(w["train_x"][i, c * 1024 + r * 32 + col] / 255)
        assert s.val.images[-1, 0, 0, 0].item() == pytest.approx((299 % 256) / 255)
        assert 0.0 <= float(s.train.images.min()) and float(s.train.images.max()) <= 1.0


def test_python_and_binary_distributions_of_the_same_images_agree(tmp_path):
    a = load_splits(write_cifar(tmp_path / "a", "cifar10", "python")["dir"])
    b = load_splits(write_cifar(tmp_path / "b", "cifar10", "binary")["dir"])
    assert a.fingerprint() == b.fingerprint()
    c = load_splits(write_cifar(tmp_path / "c", "cifar100", "python")["dir"])
    assert c.fingerprint() != a.fingerprint()


def test_archives_read_without_extracting(tmp_path):
    w = write_cifar(tmp_path / "x", "cifar100", "binary")
    archive = tmp_path / "cifar-100-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(w["dir"], arcname="cifar-100-binary")
    direct = load_splits(archive)
    assert len(direct.train) == 270 and direct.n_classes == 100
    parent = tmp_path / "downloads"
    parent.mkdir()
    archive.rename(parent / archive.name)
    assert load_splits(parent).fingerprint() == direct.fingerprint() == load_splits(w["dir"]).fingerprint()
    truncated = tmp_path / "cut" / "cifar-100-binary.tar.gz"
    truncated.parent.mkdir()
    truncated.write_bytes((parent / archive.name).read_bytes()[:5000])
    with pytest.raises(DataError, match="cifar-100-binary.tar.gz: corrupt or truncated archive"):
        load_splits(truncated)


@pytest.mark.slow
def test_full_size_cifar10_splits_45000_5000_10000(tmp_path):
    s = load_splits(write_cifar(tmp_path, "cifar10", "binary", per_batch=10_000, n_test=10_000)["dir"])
    assert (len(s.train), len(s.val), len(s.test)) == (45_000, 5_000, 10_000)


def test_full_size_split_rule():
    from fmprune.data import cifar_val_size
    assert cifar_val_size(50_000) == 5_000 and cifar_val_size(300) == 30


def damage(w: dict, fmt: str, how: str) -> Path:
    name = "data_batch_3" + (".bin" if fmt == "binary" else "")
    path = w["dir"] / name
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) - 1000])
    elif how == "short":   # a whole number of records, but fewer than the other batches
        path.write_bytes(raw[: 3073 * 10])
    elif how == "missing":
        path.unlink()
    return path


@pytest.mark.parametrize("fmt, how, message", [
    ("python", "truncated", "corrupt or truncated CIFAR batch"),
    ("binary", "truncated", "truncated file"),
    ("binary", "short", "truncated file (10 images, data_batch_1.bin has 60)"),
    ("python", "missing", "missing file"),
    ("binary", "missing", "missing file"),
])
def test_damaged_files_fail_in_one_line_naming_the_file(tmp_path, fmt, how, message):
    w = write_cifar(tmp_path, "cifar10", fmt)
    path = damage(w, fmt, how)
    with pytest.raises(DataError) as e:
        load_splits(tmp_path)
    assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_batches_with_code_or_wrong_content_are_refused(tmp_path):
    w = write_cifar(tmp_path, "cifar10", "python")
    batch = w["dir"] / "data_batch_2"
    batch.write_bytes(pickle.dumps({"data": Path("/etc"), "labels": []}, protocol=2))
    with pytest.raises(DataError, match="data_batch_2: corrupt or truncated CIFAR batch .*refusing to load pathlib"):
        load_splits(w["dir"])
    batch.write_bytes(pickle.dumps({"data": np.zeros((3, 100), np.uint8), "labels": [1, 2, 3]}, protocol=4))
    with pytest.raises(DataError, match=r"data_batch_2: data is uint8 \(3, 100\), expected uint8 \(N, 3072\)"):
        load_splits(w["dir"])
    batch.write_bytes(pickle.dumps({"data": np.zeros((3, 3072), np.uint8), "labels": [1, 2]}))
    with pytest.raises(DataError, match="data_batch_2: image/label count mismatch"):
        load_splits(w["dir"])
    batch.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 10]}))
    with pytest.raises(DataError, match="data_batch_2: label 10 out of range for 10 classes"):
        load_splits(w["dir"])


def test_a_parent_with_two_datasets_asks_which(tmp_path):
    write_cifar(tmp_path, "cifar10", "python")
    write_cifar(tmp_path, "cifar100", "binary")
    with pytest.raises(DataError, match="several CIFAR distributions .*cifar-10-batches-py, cifar-100-binary"):
        load_splits(tmp_path)


# ---------------------------------------------------------------------------- MNIST as 3x32x32
def test_mnist_3x32_adapter_pads_and_repeats(tmp_path):
    d = write_idx_dataset(tmp_path / "idx", n_train=240, n_test=60)
    base = load_splits(d)
    s = load_splits(f"mnist3x32:{d}")
    assert s.input_shape == (3, 32, 32) and s.name == "mnist3x32" and s.source.startswith("rgb32:idx:")
    assert (len(s.train), len(s.val), len(s.test)) == (len(base.train), len(base.val), len(base.test))
    x = s.train.images
    assert torch.equal(x[:, 0], x[:, 2]) and torch.equal(x[:, 1, 2:30, 2:30], base.train.images[:, 0])
    assert x[:, :, :2].abs().sum() == 0 and x[:, :, :, 30:].abs().sum() == 0
    assert torch.equal(s.test.labels, base.test.labels)
    assert s.fingerprint() != base.fingerprint() and s.fingerprint() == adapt(base, "rgb32").fingerprint()
    assert parse_data_dir("mnist3x32") == ("mnist", "rgb32") and parse_data_dir("mnist") == ("mnist", None)
    assert parse_data_dir(d) == (d, None)
    with pytest.raises(DataError, match="takes 1-channel images"):
        adapt(s, "rgb32")


def test_channel_stats_are_the_training_images_mean_and_std(tmp_path):
    s = load_splits(write_cifar(tmp_path, "cifar10", "binary")["dir"])
    mean, std = s.channel_stats()
    x = s.train.images.double()
    assert np.allclose(mean, x.mean((0, 2, 3)).numpy()) and np.allclose(std, x.transpose(0, 1).reshape(3, -1).std(1).numpy())


# ---------------------------------------------------------------------------- augmentation
def test_crop_and_flip_are_shifts_and_mirrors_drawn_from_the_seed():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    crop = Augmentation(crop_padding=2)
    out = crop(x, torch.Generator().manual_seed(5))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):   # every output is one 8x8 window of its padded image
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
    assert torch.equal(out, crop(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(out, crop(x, torch.Generator().manual_seed(6)))
    flip = Augmentation(flip=True)(x, torch.Generator().manual_seed(1))
    flipped = [torch.equal(flip[i], x[i].flip(2)) for i in range(64)]
    assert all(f or torch.equal(flip[i], x[i]) for i, f in enumerate(flipped)) and 10 < sum(flipped) < 54
    assert Augmentation.from_names(("crop", "flip")) == Augmentation(4, True)
    with pytest.raises(DataError, match="unknown augmentation 'rotate'"):
        Augmentation.from_names(["rotate"])


def test_augmented_stream_resumes_exactly(tmp_path):
    s = load_splits(write_cifar(tmp_path, "cifar10", "binary")["dir"])
    aug = Augmentation(4, True)
    a = BatchStream(s.train, 50, seed=3, augment=aug)
    first = [next(a) for _ in range(7)]
    b = BatchStream(s.train, 50, seed=3, augment=aug)
    for _ in range(4):
        next(b)
    state = b.state()
    c = BatchStream(s.train, 50, seed=3, augment=aug)
    c.restore(state)
    for want, got in zip(first[4:], (next(c) for _ in range(3))):
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    plain = next(BatchStream(s.train, 50, seed=3))
    assert torch.equal(plain[1], first[0][1]) and not torch.equal(plain[0], first[0][0])
