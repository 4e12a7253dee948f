"""`fmprune data get fashion-mnist`: a Debian package fetched without root, unpacked, checked file by
file and moved into the cache whole; and the names `fashion-mnist` / `fashion-mnist3x32`."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from support.fixture_data import synthetic_digits, write_idx
from fmprune.cli import main
from fmprune.data import fashion, load_splits
from fmprune.data.debian import ar_members, extract_data_tar
from fmprune.data.files import fmprune_home
from fmprune.errors import DataError

REAL_HOME = fmprune_home()   # read at import, before the autouse fixture points FMPRUNE_HOME elsewhere
PACKAGE_DIR = "usr/share/datasets/fashion-mnist"


# -- a small fake package --------------------------------------------------------------------------

def fake_idx_files(directory: Path) -> dict[str, bytes]:
    """The four gzip'ed IDX files, small (240 training and 60 test images), by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, (x, y) in (("train", synthetic_digits(240, 1)), ("t10k", synthetic_digits(60, 2))):
        write_idx(directory / f"{stem}-images-idx3-ubyte", x, gz=True)
        write_idx(directory / f"{stem}-labels-idx1-ubyte", y, gz=True)
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def ar_archive(members: dict[str, bytes]) -> bytes:
    """A Unix ar archive, the container of a .deb (members padded to even offsets)."""
    out = [b"!<arch>\n"]
    for name, payload in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n".encode()
        out += [header, payload, b"\n" if len(payload) % 2 else b""]
    return b"".join(out)


def fake_deb(path: Path, files: dict[str, bytes]) -> Path:
    """A Debian package holding ``files`` where dataset-fashion-mnist installs them."""
    control = b"Package: dataset-fashion-mnist\nVersion: 0-test\nArchitecture: all\nMaintainer: t <t@t>\n" \
              b"Description: test\n"
    path.write_bytes(ar_archive({
        "debian-binary": b"2.0\n",
        "control.tar.xz": tar_xz({"control": control}),
        "data.tar.xz": tar_xz({f"{PACKAGE_DIR}/{name}": payload for name, payload in files.items()}),
    }))
    return path


@pytest.fixture
def package(tmp_path, monkeypatch) -> dict[str, bytes]:
    """apt-get download hands back the fake package, nothing is installed system-wide, and the
    recorded checksums are the fake files' (as if these were the real ones)."""
    files = fake_idx_files(tmp_path / "idx")
    deb = fake_deb(tmp_path / "dataset-fashion-mnist_0-test_all.deb", files)

    def download(package: str, directory: Path, fallback: str) -> Path:
        return Path(shutil.copy(deb, directory / deb.name))

    monkeypatch.setattr(fashion, "download_deb", download)
    monkeypatch.setattr(fashion, "installed_files", lambda package: [])
    monkeypatch.setattr(fashion, "FASHION_SHA256", {n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    return files


def home() -> Path:
    return Path(os.environ["FMPRUNE_HOME"])


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``fmprune ARGS`` in this process (so monkeypatches apply): exit status, stdout, stderr."""
    old = sys.argv
    sys.argv = ["fmprune", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


# -- tests -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("unpacker", ["dpkg-deb", "python"])
def test_get_unpacks_verifies_and_names_work(package, capsys, monkeypatch, unpacker):
    if unpacker == "python":
        monkeypatch.setattr("fmprune.data.debian.shutil.which", lambda name: None)
    elif shutil.which("dpkg-deb") is None:
        pytest.skip("no dpkg-deb here")
    code, out, _ = run_cli(capsys, "data", "get", "fashion-mnist")
    target = home() / "fashion-mnist"
    assert code == 0 and out.strip() == f"Fashion-MNIST ready: {target}"
    assert sorted(p.name for p in home().iterdir()) == ["fashion-mnist"]   # no temporary folder left
    assert {p.name: p.read_bytes() for p in target.iterdir()} == package
    splits = load_splits("fashion-mnist")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (220, 20, 60)
    assert splits.name == "fashion-mnist" and splits.input_shape == (1, 28, 28)
    assert load_splits(target).name == "fashion-mnist"   # the folder path reads the same data
    assert load_splits(target).fingerprint() == splits.fingerprint()
    wide = load_splits("fashion-mnist3x32")
    assert wide.name == "fashion-mnist3x32" and wide.input_shape == (3, 32, 32)
    code, out, _ = run_cli(capsys, "data", "info", "--data-dir", "fashion-mnist")
    assert code == 0 and "dataset     fashion-mnist" in out and "test             60 images" in out


def test_name_fetches_on_first_use(package):
    assert not (home() / "fashion-mnist").exists()
    assert len(load_splits("fashion-mnist").test) == 60
    assert (home() / "fashion-mnist").is_dir()


def test_corrupt_file_refused_and_nothing_left(package, capsys, monkeypatch):
    sums = dict(fashion.FASHION_SHA256)
    sums["t10k-images-idx3-ubyte.gz"] = "0" * 64
    monkeypatch.setattr(fashion, "FASHION_SHA256", sums)
    code, out, err = run_cli(capsys, "data", "get", "fashion-mnist")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith("fmprune: error: dataset-fashion-mnist: t10k-images-idx3-ubyte.gz: checksum mismatch")
    assert "--data-dir" in lines[-1]
    assert list(home().iterdir()) == []   # neither the dataset folder nor the temporary one


def test_damaged_cache_is_refused_not_refetched(package):
    target = fashion.get_fashion_mnist()
    (target / "train-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: checksum mismatch .*delete the folder"):
        load_splits("fashion-mnist")


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="no apt-get here")
def test_unknown_package_says_apt_get_update(monkeypatch):
    """The real apt-get, asked for a package no index has (it fails before any network)."""
    monkeypatch.setattr(fashion, "FASHION_DEB", "dataset-fmprune-no-such-package")
    with pytest.raises(DataError) as info:
        fashion.get_fashion_mnist(quiet=True)
    message = str(info.value)
    assert "\n" not in message and "apt-get update" in message and "--data-dir" in message
    assert "dataset-fmprune-no-such-package" in message
    assert list(home().iterdir()) == []


def test_missing_package_cli_one_line_exit_2(tmp_path):
    """The command as a user runs it, with an apt that does not know the package."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, script in (("apt-get", 'echo "E: Unable to locate package $2" >&2; exit 100'),
                         ("dpkg", "echo \"dpkg-query: package '$2' is not installed\" >&2; exit 1")):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "fmprune", "data", "get", "fashion-mnist"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last == ("fmprune: error: cannot fetch Debian package dataset-fashion-mnist (E: Unable to locate "
                    "package dataset-fashion-mnist): run `apt-get update` (as root) so apt knows it, or pass a "
                    "folder holding the four Fashion-MNIST IDX files with --data-dir DIR")
    assert list(home().iterdir()) == []


def test_python_reader_refuses_what_is_not_a_package(tmp_path):
    bogus = tmp_path / "x.deb"
    bogus.write_bytes(b"PK\x03\x04 not an ar archive")
    with pytest.raises(DataError, match="not a Debian package"):
        extract_data_tar(bogus, tmp_path / "out")
    truncated = ar_archive({"data.tar.xz": b"12345"})[:-3]
    with pytest.raises(DataError, match="truncated file"):
        ar_members(truncated, "t.deb")


def test_real_fashion_mnist(monkeypatch):
    """The real files, when this machine has them (`fmprune data get fashion-mnist`)."""
    real = REAL_HOME / "fashion-mnist"
    if not real.is_dir():
        pytest.skip(f"Fashion-MNIST not cached at {real}")
    monkeypatch.setenv("FMPRUNE_HOME", str(REAL_HOME))
    splits = load_splits("fashion-mnist")
    assert len(splits.train) + len(splits.val) == 60_000 and len(splits.test) == 10_000
    assert splits.n_classes == 10 and splits.input_shape == (1, 28, 28)
    for split in (splits.train, splits.test):
        assert np.array_equal(np.unique(split.labels.numpy()), np.arange(10))
