"""Unpacking a tar or zip of photos by ourselves, member by member, refusing anything but files and folders.

Extraction never calls ``tarfile``'s ``extract``/``extractall`` nor ``zipfile``'s, so it does not rely
on their filters (``filter="data"`` is bypassable before Python 3.11.13, 3.12.11 and 3.13.4,
CVE-2025-4517). Members are read lazily, one at a time: the caps on their count and unpacked bytes
stop a bomb before it is all read. One bad member refuses the whole archive: an absolute path or
``..``, any symbolic or hard link (a photo archive needs none, and a link's target is never read),
a device, FIFO or other special file. Sizes declared in the headers are checked against the free
disk space before writing (a zip's total at once, a tar's member by member). Each destination is computed here, its folders created one level at a time without following
links, the file opened with ``O_EXCL | O_NOFOLLOW`` and its resolved path checked to stay under the
target. A refused archive leaves nothing behind: the target folder is removed.
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ...atomic import check_free_space
from ...errors import DataError
from .paths import inside, make_dirs

MAX_MEMBERS = 5_000_000  # the largest iNat competition archive has about 2.7 million
MAX_BYTES = 256 << 30  # 256 GiB unpacked: the largest iNat competition archive (2021 train) is 224 GB
CHUNK = 1 << 20
OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)

# (name, kind, declared size, opener of its bytes) with kind one of file, dir, link, hardlink, special
Member = tuple[str, str, int, Callable[[], IO[bytes]]]


def extract(archive: Path, target: Path, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_BYTES) -> None:
    """Unpack ``archive`` into the new or empty folder ``target``; a :class:`DataError` refuses it whole."""
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise DataError(f"{target}: not empty; an archive is unpacked only into an empty folder")
    try:
        _extract(archive, target, max_members, max_bytes)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _extract(archive: Path, target: Path, max_members: int, max_bytes: int) -> None:
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tar:
                _unpack(archive, target, _tar_members(tar), max_members, max_bytes)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                if len(infos) > max_members:
                    raise DataError(f"{archive}: refused, more than {max_members} members (the cap)")
                check_free_space(target, min(sum(info.file_size for info in infos), max_bytes), str(archive))
                _unpack(archive, target, _zip_members(zf), max_members, max_bytes)
        else:
            raise DataError(f"{archive}: not a tar (.tar, .tar.gz, .tar.bz2, .tar.xz) or zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, RuntimeError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise DataError(f"{archive}: cannot be unpacked ({' '.join(str(exc).split())})") from None


def _tar_members(tar: tarfile.TarFile) -> Iterator[Member]:
    while (member := tar.next()) is not None:
        tar.members.clear()  # tarfile keeps every header it read; we need none of them later
        if member.isreg():
            kind = "file"
        elif member.isdir():
            kind = "dir"
        elif member.issym():
            kind = "link"
        elif member.islnk():
            kind = "hardlink"
        else:
            kind = "special"
        yield member.name, kind, member.size, lambda member=member: tar.extractfile(member)


def _zip_members(zf: zipfile.ZipFile) -> Iterator[Member]:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):  # its body (the link target) is never read
            kind = "link"
        elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind = "special"
        else:
            kind = "dir" if info.is_dir() else "file"
        yield info.filename, kind, info.file_size, lambda info=info: zf.open(info)


def relative_parts(name: str) -> list[str] | None:
    """The path components of a member name, or None if it is absolute or climbs with ``..``."""
    if "\x00" in name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    return None if ".." in parts else parts


def _unpack(archive: Path, target: Path, members: Iterator[Member], max_members: int, max_bytes: int) -> None:
    total = 0
    for count, (name, kind, size, opener) in enumerate(members, start=1):
        if count > max_members:
            raise DataError(f"{archive}: refused, more than {max_members} members (the cap)")
        refuse = f"{archive}: refused, member '{' '.join(name.split())}'"
        parts = relative_parts(name)
        if parts is None:
            raise DataError(f"{refuse} has an absolute path or '..'")
        if kind in ("link", "hardlink"):
            raise DataError(f"{refuse} is a {'symbolic' if kind == 'link' else 'hard'} link (a photo archive needs none)")
        if kind == "special":
            raise DataError(f"{refuse} is a device, FIFO or other special file")
        total += size
        if total > max_bytes:
            raise DataError(f"{archive}: refused, members unpack to more than the cap of {max_bytes} bytes")
        destination = target.joinpath(*parts)
        if kind == "dir":
            make_dirs(target, destination)
        elif parts:
            make_dirs(target, destination.parent)
            check_free_space(target, size, refuse)
            _write(opener, inside(target, destination), size, refuse)


def _write(opener: Callable[[], IO[bytes]], destination: Path, size: int, refuse: str) -> None:
    """Copy exactly ``size`` bytes into a new file that no link or earlier member may stand in for."""
    try:
        fd = os.open(destination, OPEN_FLAGS, 0o666)
    except FileExistsError:
        raise DataError(f"{refuse} appears twice or clashes with a folder") from None
    written = 0
    with os.fdopen(fd, "wb") as out, opener() as source:
        while block := source.read(min(CHUNK, size - written + 1)):
            written += len(block)
            if written > size:
                raise DataError(f"{refuse} holds more bytes than its header declares ({size})")
            out.write(block)
    if written != size:
        raise DataError(f"{refuse} is cut short ({written} of {size} bytes)")
