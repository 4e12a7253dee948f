"""What ``--data-dir`` may name, and loading it.

- nothing, or ``mnist``: MNIST from the cache (fetched on first use);
- ``fashion-mnist``: Fashion-MNIST from the cache (fetched on first use, see :mod:`.fashion`);
- ``mnist3x32`` / ``fashion-mnist3x32``: the same data presented as 3×32×32 (see :mod:`.adapters`);
  ``mnist3x32:PATH`` does that to the MNIST-format data at PATH;
- ``FILE.py:factory``: the user's own datasets (see :mod:`.factory`);
- a path: CIFAR-10/100 (python or binary; the extracted folder, its parent, or the archive),
  a directory of MNIST IDX files, a directory holding ``mnist.pkl.gz``, or that file; or an image
  folder (``DIR/train/<class>/*.jpg``, see :mod:`.imagefolder`), read at ``image_shape``.

An existing path always wins over a name, so a folder called ``mnist`` is read as a folder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from ..errors import DataError
from .adapters import adapt
from .cifar import find_cifar, load_cifar
from .factory import is_data_factory, load_data_factory
from .fashion import FASHION_MNIST, get_fashion_mnist, is_fashion_mnist_dir
from .imagefolder import is_image_folder, load_image_folder
from .mnist import IDX_FILES, MNIST_PKL_NAME, fetch_mnist, load_cached_mnist, load_idx_dir, load_mnist_pkl
from .splits import Splits

MNIST = "mnist"
MNIST3X32 = "mnist3x32"
FASHION_MNIST3X32 = "fashion-mnist3x32"
_NAMES = {   # what --data-dir may name -> (the cached dataset it reads, adapter)
    MNIST: (MNIST, None),
    MNIST3X32: (MNIST, "rgb32"),
    FASHION_MNIST: (FASHION_MNIST, None),
    FASHION_MNIST3X32: (FASHION_MNIST, "rgb32"),
}
DATA_NAMES = tuple(_NAMES)
_CACHED: dict[str, Callable[[int | None], Splits]] = {   # cached dataset -> its loader (fetching on first use)
    MNIST: lambda val_size: load_cached_mnist(fetch_mnist(), val_size),
    FASHION_MNIST: lambda val_size: load_idx_dir(get_fashion_mnist(), val_size, FASHION_MNIST),
}


def parse_data_dir(data_dir: Path | str | None) -> tuple[Path | str, str | None]:
    """``(a path, or the name of a cached dataset (mnist, fashion-mnist); adapter or None)``;
    nothing given is the cached MNIST."""
    if data_dir is None:
        return MNIST, None
    text = str(data_dir)
    path = Path(text).expanduser()
    if path.exists():
        return path, None
    if text in _NAMES:
        return _NAMES[text]
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
    return load_idx_dir(path, val_size, FASHION_MNIST if is_fashion_mnist_dir(path) else MNIST)


def load_splits(data_dir: Path | str | None = None, val_size: int | None = None,
                image_shape: tuple[int, int, int] | None = None, corrupt: str | None = None) -> Splits:
    """The splits ``--data-dir`` names (None: the cached MNIST; a cached dataset is fetched on first use); an image
    folder is read at ``image_shape`` (default 3×224×224), skipping or refusing undecodable
    images as ``corrupt`` says."""
    if data_dir is not None and is_data_factory(str(data_dir)):
        return load_data_factory(str(data_dir))
    source, adapter = parse_data_dir(data_dir)
    splits = (_CACHED[source](val_size) if isinstance(source, str)
              else load_path(source, val_size, image_shape, corrupt))
    return adapt(splits, adapter) if adapter else splits


@dataclass(frozen=True)
class DataRequest:
    """The data a command asks for, whole and picklable: ``--data-dir`` (``path``), the model's
    input shape an image folder is read at, and ``--corrupt-images``. Sweep workers, Ray tasks
    and tuning trials receive it as an argument and load exactly what the command loaded."""

    path: str | None = None
    image_shape: tuple[int, ...] | None = None
    corrupt: str | None = None

    @classmethod
    def of(cls, data: "DataRequest | Path | str | None") -> "DataRequest":
        """``data`` as a request: a bare ``--data-dir`` value is read with the defaults."""
        return data if isinstance(data, DataRequest) else cls(None if data is None else str(data))

    def with_corrupt(self, corrupt: str | None) -> "DataRequest":
        """The same data with this corrupt-image policy (None keeps the request's)."""
        return replace(self, corrupt=corrupt) if corrupt else self

    def at(self, shape: Sequence[int] | None) -> "DataRequest":
        """The same data, an image folder read at ``shape`` (C,H,W; None keeps the request's)."""
        return replace(self, image_shape=tuple(int(d) for d in shape)) if shape else self

    def load(self, val_size: int | None = None) -> Splits:
        return load_splits(self.path, val_size, self.image_shape, self.corrupt)
