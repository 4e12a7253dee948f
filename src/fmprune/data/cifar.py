"""CIFAR-10 and CIFAR-100 from their standard distribution files, python (pickle) or binary,
extracted or still in their ``.tar.gz`` archive.

Each image is 3072 bytes: the red, green and blue 32x32 planes, rows in order. The python
batches are pickled dicts (``data`` N×3072 uint8, ``labels`` or ``fine_labels``), read with an
unpickler that builds numpy arrays and nothing else. A binary record is the label byte (CIFAR-100:
coarse then fine label byte) followed by the image. The 50,000 training images are split 45,000
train / 5,000 validation (the last 5,000, as for MNIST); the 10,000 test images are the test split.
"""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from .files import DAMAGED
from .safe_pickle import load_array_pickle
from .splits import DEFAULT_VAL_SIZE, Splits, make_splits

IMAGE_BYTES = 3 * 32 * 32
CIFAR_AUGMENTATION = ("crop", "flip")


@dataclass(frozen=True)
class CifarLayout:
    """One of the four distributions: which files it has and how a record is laid out."""

    dataset: str                 # cifar10 | cifar100
    format: str                  # python | binary
    folder: str                  # the folder its archive extracts to
    archive: str                 # the archive's standard name
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    classes: int

    @property
    def label_key(self) -> str:
        return "labels" if self.dataset == "cifar10" else "fine_labels"

    @property
    def label_bytes(self) -> int:
        """Bytes before the image in a binary record; the fine label is the last of them."""
        return 1 if self.dataset == "cifar10" else 2


_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
LAYOUTS = (
    CifarLayout("cifar10", "python", "cifar-10-batches-py", "cifar-10-python.tar.gz", _BATCHES, ("test_batch",), 10),
    CifarLayout("cifar10", "binary", "cifar-10-batches-bin", "cifar-10-binary.tar.gz",
                tuple(f"{b}.bin" for b in _BATCHES), ("test_batch.bin",), 10),
    CifarLayout("cifar100", "python", "cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",), 100),
    CifarLayout("cifar100", "binary", "cifar-100-binary", "cifar-100-binary.tar.gz", ("train.bin",), ("test.bin",), 100),
)


def cifar_val_size(n_train: int) -> int:
    """5,000 of 50,000; a tenth of a smaller training set."""
    return min(DEFAULT_VAL_SIZE, n_train // 10)


# ---------------------------------------------------------------------------- finding the files
@dataclass(frozen=True)
class CifarSource:
    """Where a layout's files are: a directory, or a folder inside a tar archive."""

    layout: CifarLayout
    location: Path               # the directory, or the archive
    in_archive: bool = False

    def label(self, name: str) -> str:
        return f"{self.location}:{self.layout.folder}/{name}" if self.in_archive else str(self.location / name)

    def read_all(self) -> dict[str, bytes]:
        """The bytes of every train and test file, or a DataError naming the first missing one."""
        wanted = self.layout.train_files + self.layout.test_files
        found = _read_archive(self.location, self.layout.folder, wanted) if self.in_archive else {
            n: _read_file(self.location / n) for n in wanted if (self.location / n).is_file()}
        for name in wanted:
            if name not in found:
                raise DataError(f"{self.label(name)}: missing file (a {self.layout.dataset} {self.layout.format} "
                                f"distribution has {', '.join(wanted)})")
        return found


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _read_archive(archive: Path, folder: str, wanted: tuple[str, ...]) -> dict[str, bytes]:
    """One pass over the archive (a gzip stream cannot seek back cheaply)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parent, _, base = member.name.rpartition("/")
                if member.isfile() and base in wanted and parent.rstrip("/").endswith(folder):
                    f = tar.extractfile(member)
                    found[base] = f.read() if f is not None else b""
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive}: corrupt or truncated archive ({type(e).__name__}: {e}); {DAMAGED}") from None
    return found


def _layout_in_dir(directory: Path) -> CifarLayout | None:
    """The layout whose identifying files (first training file and the test file) are here."""
    for layout in LAYOUTS:
        marker = (layout.train_files[0], layout.test_files[0])
        if any((directory / m).is_file() for m in marker):
            if layout.format == "python" and layout.dataset == "cifar100" and not (directory / "meta").is_file():
                continue   # bare "train"/"test" files alone are too generic to claim CIFAR-100
            return layout
    return None


def _layout_in_archive(archive: Path) -> CifarLayout | None:
    names = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                names.add(member.name.rstrip("/"))
                if len(names) > 64:
                    break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive}: corrupt or truncated archive ({type(e).__name__}: {e}); {DAMAGED}") from None
    for layout in LAYOUTS:
        if any(n == layout.folder or n.endswith("/" + layout.folder) or f"{layout.folder}/" in n for n in names):
            return layout
    return None


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar"))


def find_cifar(path: Path) -> CifarSource | None:
    """The CIFAR distribution at ``path``: the extracted folder itself, a standard folder or
    archive inside it (folders first), or an archive; None when there is none."""
    if is_archive(path):
        layout = _layout_in_archive(path)
        if layout is None:
            raise DataError(f"{path}: not a CIFAR archive (no {', '.join(l.folder for l in LAYOUTS)} inside)")
        return CifarSource(layout, path, in_archive=True)
    if not path.is_dir():
        return None
    layout = _layout_in_dir(path)
    if layout is not None:
        return CifarSource(layout, path)
    sources = [CifarSource(l, path / l.folder) for l in LAYOUTS
               if (path / l.folder).is_dir() and _layout_in_dir(path / l.folder) == l]
    if not sources:
        sources = [CifarSource(l, path / l.archive, in_archive=True) for l in LAYOUTS if (path / l.archive).is_file()]
    if len(sources) > 1:
        names = ", ".join(s.location.name for s in sources)
        raise DataError(f"{path}: holds several CIFAR distributions ({names}); give one of them as --data-dir")
    return sources[0] if sources else None


# ---------------------------------------------------------------------------- decoding
def _decode_python(data: bytes, name: str, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = load_array_pickle(data)
    except Exception as e:  # noqa: BLE001 - any malformed content is a data error, never a crash
        raise DataError(f"{name}: corrupt or truncated CIFAR batch ({type(e).__name__}: {e}); {DAMAGED}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{name}: not a CIFAR batch (a {type(batch).__name__}, expected a dict)")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or layout.label_key not in batch:
        raise DataError(f"{name}: not a {layout.dataset} batch (keys {sorted(batch)}, "
                        f"expected data and {layout.label_key})")
    images = np.asarray(batch["data"])
    labels = np.asarray(batch[layout.label_key])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != IMAGE_BYTES:
        raise DataError(f"{name}: data is {images.dtype} {images.shape}, expected uint8 (N, {IMAGE_BYTES})")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{name}: image/label count mismatch ({len(images)} images, {labels.size} labels)")
    return images, labels.astype(np.int64)


def _decode_binary(data: bytes, name: str, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    record = layout.label_bytes + IMAGE_BYTES
    if not data or len(data) % record:
        raise DataError(f"{name}: truncated file ({len(data)} bytes, not a whole number of "
                        f"{record}-byte records); {DAMAGED}")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    return rows[:, layout.label_bytes:], rows[:, layout.label_bytes - 1].astype(np.int64)


def _decode_files(source: CifarSource, files: dict[str, bytes], names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    decode: Callable[[bytes, str, CifarLayout], tuple[np.ndarray, np.ndarray]] = (
        _decode_python if source.layout.format == "python" else _decode_binary)
    parts = []
    for name in names:
        images, labels = decode(files[name], source.label(name), source.layout)
        if labels.size and (labels.min() < 0 or labels.max() >= source.layout.classes):
            raise DataError(f"{source.label(name)}: label {int(labels.max())} out of range for "
                            f"{source.layout.classes} classes")
        if parts and len(images) != len(parts[0][0]):   # CIFAR-10's five batches are equal
            raise DataError(f"{source.label(name)}: truncated file ({len(images)} images, "
                            f"{names[0]} has {len(parts[0][0])}); {DAMAGED}")
        parts.append((images, labels))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images = images.reshape(-1, 3, 32, 32).astype(np.float32)
    images /= 255.0   # in place: one float copy of CIFAR is 600 MB
    return images, labels


def load_cifar(source: CifarSource, val_size: int | None = None) -> Splits:
    """Read every file of ``source`` into 45k/5k/10k splits (smaller files: a tenth held out)."""
    files = source.read_all()
    train_x, train_y = _decode_files(source, files, source.layout.train_files)
    test_x, test_y = _decode_files(source, files, source.layout.test_files)
    if val_size is None:
        val_size = cifar_val_size(len(train_x))
    where = f"{source.location}" + (f":{source.layout.folder}" if source.in_archive else "")
    return make_splits(train_x, train_y, test_x, test_y, val_size,
                       f"{source.layout.dataset}-{source.layout.format}:{where}",
                       classes=source.layout.classes, augmentation=CIFAR_AUGMENTATION, name=source.layout.dataset)
