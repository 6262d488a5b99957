"""Where files from outside (archive members, class names from an API or a JSON) may land.

Names we did not choose never become paths as they are: every write checks, on the resolved path,
that it stays under its root, so a hostile name or a link that slipped in cannot write elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError


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
