"""Files out of Debian packages, fetched with the ordinary Debian client and no root.

Debian ships some datasets as packages (``dataset-fashion-mnist``): apt's mirrors are reachable
where other downloads are not, and ``apt-get download`` fetches a ``.deb`` into the current
directory as any user. Only ``apt-get update`` needs root, so a package apt does not know yet is
reported with that way out rather than worked around. Unpacking uses ``dpkg-deb -x`` when present
(it reads every compression dpkg does), else Python's own ar + tar reading.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from ..errors import DataError

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60   # name 16, mtime 12, uid 6, gid 6, mode 8, size 10, magic 2


def installed_files(package: str) -> list[Path]:
    """The files an installed ``package`` put on this system (``dpkg -L``); empty when it is not
    installed or there is no dpkg, so the caller falls back to a download."""
    try:
        proc = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    except FileNotFoundError:
        return []
    if proc.returncode != 0:
        return []
    return [Path(line) for line in proc.stdout.splitlines() if line.strip() and Path(line).is_file()]


def download_deb(package: str, directory: Path, fallback: str) -> Path:
    """``apt-get download package`` into ``directory``; the ``.deb`` it wrote. ``fallback`` ends
    the error message: what the user can do instead (e.g. pass the files with --data-dir)."""
    try:
        proc = subprocess.run(["apt-get", "download", package], cwd=directory, capture_output=True, text=True)
    except FileNotFoundError:
        raise DataError(f"cannot fetch Debian package {package}: no apt-get on this system; {fallback}") from None
    debs = sorted(directory.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise DataError(f"cannot fetch Debian package {package} ({_apt_error(proc.stderr)}): "
                        f"run `apt-get update` (as root) so apt knows it, or {fallback}")
    return debs[0]


def _apt_error(stderr: str) -> str:
    """apt's own reason, its ``E:`` line (warnings about the _apt sandbox are not the reason)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E:")]
    return (errors or lines or ["apt-get download failed"])[-1]


def unpack_deb(deb: Path, destination: Path) -> None:
    """Extract the package's files (its data archive) under ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    if shutil.which("dpkg-deb"):
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(destination)], capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise DataError(f"{deb.name}: dpkg-deb cannot unpack it ({last}); the download is damaged")
        return
    extract_data_tar(deb, destination)


def ar_members(blob: bytes, where: str) -> dict[str, bytes]:
    """The members of an ar archive (a ``.deb`` is one): name -> content."""
    if not blob.startswith(_AR_MAGIC):
        raise DataError(f"{where}: not a Debian package (no ar archive header)")
    members, pos = {}, len(_AR_MAGIC)
    while pos + _AR_HEADER <= len(blob):
        header = blob[pos:pos + _AR_HEADER]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise DataError(f"{where}: corrupt ar member header at byte {pos}") from None
        start = pos + _AR_HEADER
        if start + size > len(blob):
            raise DataError(f"{where}: truncated file (member {name!r} needs {size} bytes)")
        members[name] = blob[start:start + size]
        pos = start + size + (size & 1)   # members are padded to an even offset
    return members


def extract_data_tar(deb: Path, destination: Path) -> None:
    """Python's reading of a ``.deb``: its ``data.tar[.gz|.xz|.bz2]`` extracted with tarfile's
    ``data`` filter (no links out of ``destination``, no devices). ``.zst`` needs dpkg-deb."""
    members = ar_members(deb.read_bytes(), deb.name)
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None:
        raise DataError(f"{deb.name}: not a Debian package (no data.tar member)")
    if name.endswith(".zst"):
        raise DataError(f"{deb.name}: its {name} needs dpkg-deb to unpack (install dpkg)")
    try:
        with tarfile.open(fileobj=io.BytesIO(members[name]), mode="r:*") as tar:
            tar.extractall(destination, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{deb.name}: cannot unpack {name} ({e}); the download is damaged") from None
