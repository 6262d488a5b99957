"""Where files from outside (archive members, class names from an API or a JSON) may land.

Names we did not choose never become paths as they are: every write checks, on the resolved path,
that it stays under its root, so a hostile name or a link that slipped in cannot write elsewhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from ...errors import DataError


def inside(root: Path, path: Path) -> Path:
    """``path`` if, links resolved, it lies under ``root``; otherwise a :class:`DataError`."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, base]) != base:
        raise DataError(f"{path}: refused, it resolves to {real}, outside {base}")
    return path


def make_dirs(root: Path, path: Path) -> None:
    """Create ``path`` and its missing parents under ``root``, one level at a time, following no link."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            if current.is_symlink() or not current.is_dir():
                raise DataError(f"{current}: refused, expected a folder, found a link or a file") from None
    inside(root, path)


MAX_NAME_BYTES = 255  # a file name's limit on every common filesystem
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


def safe_component(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name`` as one visible path component: no separators, NUL or control characters, no leading
    dot (so never ``.`` or ``..``, nor hidden), at most ``max_bytes`` of UTF-8."""
    safe = _UNSAFE.sub("_", name.strip())
    safe = "_" + safe[1:] if safe.startswith(".") else safe or "_"
    encoded = safe.encode("utf-8")
    if len(encoded) > max_bytes:
        safe = encoded[:max_bytes].decode("utf-8", "ignore").rstrip() or "_"
    return safe


def class_folders(names: Iterable[str]) -> dict[str, str]:
    """A distinct safe folder name for each class name; names equal but for case get ``~2``, ``~3``.

    The manifest and ``classes.json`` keep the real names; only folders use these.
    """
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for name in sorted(set(names)):
        base = safe_component(name, MAX_NAME_BYTES - 8)  # room for a suffix
        folder, number = base, 1
        while folder.casefold() in taken:
            number += 1
            folder = f"{base}~{number}"
        taken.add(folder.casefold())
        folders[name] = folder
    return folders
