"""What ``--data-dir`` may name, and loading it.

- nothing, or ``mnist``: MNIST from the cache (fetched on first use);
- ``mnist3x32``: the same MNIST presented as 3×32×32 (see :mod:`.adapters`);
  ``mnist3x32:PATH`` does that to the MNIST-format data at PATH;
- a path: CIFAR-10/100 (python or binary; the extracted folder, its parent, or the archive),
  a directory of MNIST IDX files, a directory holding ``mnist.pkl.gz``, or that file; or an image
  folder (``DIR/train/<class>/*.jpg``, see :mod:`.imagefolder`), read at ``image_shape``.

An existing path always wins over a name, so a folder called ``mnist`` is read as a folder.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .adapters import adapt
from .cifar import find_cifar, load_cifar
from .imagefolder import is_image_folder, load_image_folder
from .mnist import IDX_FILES, MNIST_PKL_NAME, fetch_mnist, load_cached_mnist, load_idx_dir, load_mnist_pkl
from .splits import Splits

MNIST3X32 = "mnist3x32"
DATA_NAMES = ("mnist", MNIST3X32)


def parse_data_dir(data_dir: Path | str | None) -> tuple[Path | None, str | None]:
    """``(path or None for the cached MNIST, adapter or None)``."""
    if data_dir is None:
        return None, None
    text = str(data_dir)
    path = Path(text).expanduser()
    if path.exists():
        return path, None
    if text == "mnist":
        return None, None
    if text == MNIST3X32:
        return None, "rgb32"
    if text.startswith(MNIST3X32 + ":"):
        return Path(text[len(MNIST3X32) + 1:]).expanduser(), "rgb32"
    return path, None


def load_path(path: Path, val_size: int | None = None, image_shape: tuple[int, int, int] | None = None,
              corrupt: str | None = None) -> Splits:
    """The dataset stored at ``path`` (see the module doc for the forms); ``image_shape`` and
    ``corrupt`` apply to image folders only."""
    if not path.exists():
        raise DataError(f"{path}: missing file or directory; --data-dir takes a directory of MNIST IDX "
                        "files, an mnist.pkl.gz file, a CIFAR-10/100 folder or archive, an image folder "
                        "(DIR/train/<class>/*.jpg), or one of the names "
                        f"{', '.join(DATA_NAMES)}")
    cifar = find_cifar(path)
    if cifar is not None:
        return load_cifar(cifar, val_size)
    if is_image_folder(path):
        return load_image_folder(path, image_shape, val_size, corrupt)
    if path.is_file():
        return load_mnist_pkl(path, val_size)
    pkl = path / MNIST_PKL_NAME
    if pkl.is_file() and not any((path / s).exists() or (path / f"{s}.gz").exists()
                                 for s in IDX_FILES.values()):
        return load_mnist_pkl(pkl, val_size)
    return load_idx_dir(path, val_size)


def load_splits(data_dir: Path | str | None = None, val_size: int | None = None,
                image_shape: tuple[int, int, int] | None = None, corrupt: str | None = None) -> Splits:
    """The splits ``--data-dir`` names (None: the cached MNIST, fetched on first use); an image
    folder is read at ``image_shape`` (default 3×224×224), skipping or refusing undecodable
    images as ``corrupt`` says."""
    path, adapter = parse_data_dir(data_dir)
    splits = (load_cached_mnist(fetch_mnist(), val_size) if path is None
              else load_path(path, val_size, image_shape, corrupt))
    return adapt(splits, adapter) if adapter else splits
