import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from fmprune import data
from fmprune.data import load_splits, read_idx
from fmprune.errors import DataError

from support.fixture_data import synthetic_digits, write_idx, write_idx_dataset


def test_idx_plain_and_gz_read_identically(tmp_path):
    images, labels = synthetic_digits(20, 0)
    a = read_idx(write_idx(tmp_path / "a-idx3-ubyte", images))
    b = read_idx(write_idx(tmp_path / "b-idx3-ubyte", images, gz=True))
    assert a.shape == (20, 28, 28) and np.array_equal(a, images) and np.array_equal(a, b)
    assert np.array_equal(read_idx(write_idx(tmp_path / "l-idx1-ubyte", labels)), labels)


def test_splits_hold_out_the_last_training_images(tmp_path):
    d = write_idx_dataset(tmp_path / "d", n_train=1200, n_test=300, gz=True)
    s = load_splits(d)
    assert (len(s.train), len(s.val), len(s.test)) == (1100, 100, 300)
    raw = read_idx(d / "train-images-idx3-ubyte.gz")
    assert np.allclose(s.val.images[-1, 0].numpy(), raw[-1] / 255.0)
    assert s.train.images.shape[1:] == (1, 28, 28) and s.train.images.dtype.is_floating_point
    assert 0.0 <= float(s.train.images.min()) and float(s.train.images.max()) <= 1.0
    assert str(s.train.labels.dtype) == "torch.int64"


def test_torchvision_raw_layout_is_found(tmp_path):
    write_idx_dataset(tmp_path / "MNIST" / "raw")
    assert len(load_splits(tmp_path / "MNIST").test) == 300


def test_mnist_pkl_resplit_55k_5k_like_tensorflow(tmp_path):
    rng = np.random.default_rng(0)
    part = lambda n: (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n))  # noqa: E731
    train, valid, test = part(500), part(100), part(100)
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps((train, valid, test))))
    s = load_splits(path)
    assert (len(s.train), len(s.val), len(s.test)) == (550, 50, 100)
    assert np.allclose(s.val.images[-1].flatten().numpy(), valid[0][-1])
    assert load_splits(tmp_path).fingerprint() == s.fingerprint()


def test_pkl_with_code_is_refused(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(Path("/etc"))))
    with pytest.raises(DataError, match="not a valid mnist.pkl.gz"):
        load_splits(path)


@pytest.mark.parametrize("damage, message", [
    ("missing", "missing file"),
    ("magic", "wrong magic number"),
    ("truncated", "truncated file"),
    ("mismatch", "image/label count mismatch"),
])
def test_bad_idx_input_names_file_and_problem(tmp_path, damage, message):
    d = write_idx_dataset(tmp_path / "d", n_train=240, n_test=60)
    labels = d / "train-labels-idx1-ubyte"
    if damage == "missing":
        labels.unlink()
    elif damage == "magic":
        labels.write_bytes(b"\x00\x00\x08\x09" + labels.read_bytes()[4:])
    elif damage == "truncated":
        labels.write_bytes(labels.read_bytes()[:100])
    else:
        write_idx(labels, np.zeros(10, np.uint8))
    with pytest.raises(DataError, match=message) as e:
        load_splits(d)
    assert "train-" in str(e.value) and "\n" not in str(e.value)


def test_cached_file_with_wrong_checksum_is_refused(tmp_path):
    (tmp_path / data.MNIST_PKL_NAME).write_bytes(b"not mnist")
    with pytest.raises(DataError, match="checksum mismatch"):
        data.fetch_mnist(tmp_path)
