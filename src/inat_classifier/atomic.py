"""Atomic writes: a stage killed mid-write leaves the old file or none, never half a file.

Contents are flushed to disk before the rename and the folder after it, so a power cut cannot leave
a complete-looking name with zero-length or missing contents (what a rerun would then trust).
Outputs get the permissions the umask gives any new file; the temporary folders a killed run left
beside a target are removed when the next run writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from .errors import DataError

RESERVE = 256 << 20  # disk left free for everything else when we write large things


def fsync_path(path: str | Path) -> None:
    """Flush a file's contents, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: str | Path) -> None:
    """Flush everything under ``folder``: one system-wide sync where there is one, else file by file."""
    if hasattr(os, "sync"):
        os.sync()
        return
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(root)


def replace(source: str | Path, target: str | Path) -> None:
    """``os.replace`` that survives a power cut: contents on disk first, the new name after."""
    if Path(source).is_dir():
        sync_tree(source)
    else:
        fsync_path(source)
    os.replace(source, target)
    fsync_path(Path(target).parent)


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """A one-line :class:`DataError` naming ``what`` if ``needed`` bytes would not fit in ``folder``'s disk."""
    free = shutil.disk_usage(folder).free
    if needed + RESERVE > free:
        raise DataError(f"{what}: needs {needed:,} bytes but {folder} has {free:,} free (keeping {RESERVE:,} spare)")


def umask() -> int:
    """The process umask, read without changing it where the system allows (other threads write meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale(target: Path) -> None:
    """Delete what a killed :func:`atomic_dir` left beside ``target``: its temporary and old copies."""
    stale = re.compile(rf"\.{re.escape(target.name)}\.([a-z0-9_]{{8}}\.tmp|old)")  # mkdtemp's 8 characters
    for entry in target.parent.iterdir():
        if stale.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the target's extension: some writers (Keras) insist on it.
    fd, tmp = tempfile.mkstemp(prefix=f".tmp.{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~umask())  # mkstemp's 0600 is for secrets
    try:
        yield tmp_path
        replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``target`` as a whole on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 is for secrets
    try:
        yield tmp
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | Path, data: object) -> None:
    """Stable formatting so that identical results give identical bytes (dvc.lock, git)."""
    write_text(target, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_csv(target: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
