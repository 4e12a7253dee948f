"""Fashion-MNIST (Zalando's clothing images, MNIST's format and sizes) from Debian's
``dataset-fashion-mnist`` package, checked file by file and cached as an IDX directory.

MNIST is too easy to tell pruning methods apart (nearly every method keeps ~99 %); Fashion-MNIST
has the same shapes and IDX files but leaves room (~90 % for LeNet). The files stay gzip'ed as
shipped (the IDX reader takes them as they are) and are checked against the SHA-256 sums below,
computed once from the package (version 0.0~git20200523.55506a9-1, the one Debian ships).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import DataError
from .debian import download_deb, installed_files, unpack_deb
from .files import fmprune_home, sha256_file

FASHION_MNIST = "fashion-mnist"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")   # where the package installs them
FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
_BRING_FILES = ("pass a folder holding the four Fashion-MNIST IDX files with --data-dir DIR")


def fashion_mnist_dir(home: Path | None = None) -> Path:
    """Where the verified files live in the cache (whether fetched yet or not)."""
    return (home or fmprune_home()) / FASHION_MNIST


def is_fashion_mnist_dir(path: Path) -> bool:
    """``path`` is the cached or the system-installed copy (so its data are named fashion-mnist)."""
    resolved = path.expanduser().resolve()
    return resolved in (fashion_mnist_dir().resolve(), FASHION_SYSTEM_DIR.resolve())


def get_fashion_mnist(home: Path | None = None, quiet: bool = False) -> Path:
    """Make sure the verified Fashion-MNIST files are in the cache; return their folder.

    Read from the installed package when there is one, else fetched with ``apt-get download``.
    The files are copied and checked in a temporary folder beside the target and moved into
    place whole, so a failure (or a concurrent fetch) never leaves a partial dataset behind."""
    target = fashion_mnist_dir(home)
    if target.exists():
        return _verified(target, "delete the folder to fetch it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{FASHION_MNIST}-") as tmp:
        staging = Path(tmp) / FASHION_MNIST
        staging.mkdir()
        for name, source in _package_files(Path(tmp), quiet).items():
            shutil.copyfile(source, staging / name)
        _verified(staging, f"the Debian package is not the one these sums were taken from; {_BRING_FILES}",
                  shown=FASHION_DEB)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.exists():   # not a concurrent fetch that got there first
                raise
    return _verified(target, "delete the folder to fetch it again")


def _package_files(tmp: Path, quiet: bool) -> dict[str, Path]:
    """File name -> where the package's copy is: installed on the system, or unpacked in ``tmp``."""
    system = {p.name: p for p in installed_files(FASHION_DEB) if p.name in FASHION_SHA256}
    if len(system) == len(FASHION_SHA256):
        if not quiet:
            print(f"reading Fashion-MNIST from the installed package {FASHION_DEB}", file=sys.stderr)
        return system
    if not quiet:
        print(f"fetching Fashion-MNIST: apt-get download {FASHION_DEB}", file=sys.stderr)
    deb = download_deb(FASHION_DEB, tmp, _BRING_FILES)
    unpack_deb(deb, tmp / "root")
    found = {p.name: p for p in (tmp / "root").rglob("*") if p.name in FASHION_SHA256 and p.is_file()}
    missing = sorted(set(FASHION_SHA256) - set(found))
    if missing:
        raise DataError(f"{deb.name}: has no {missing[0]}; the package changed: {_BRING_FILES}")
    return found


def _verified(folder: Path, remedy: str, shown: str | None = None) -> Path:
    """``folder`` when it holds every file with the recorded checksum; else one line naming the
    first file that is missing or differs (under ``shown`` instead of a temporary folder that
    is gone when the user reads it), and ``remedy``."""
    for name, expected in FASHION_SHA256.items():
        path = folder / name
        where = f"{shown}: {name}" if shown else str(path)
        if not path.is_file():
            raise DataError(f"{where}: missing file; {remedy}")
        digest = sha256_file(path)
        if digest != expected:
            raise DataError(f"{where}: checksum mismatch (got {digest[:12]}…, expected {expected[:12]}…); {remedy}")
    return folder
