"""``folder``: a local directory with ``train/<class>/*`` and ``test/<class>/*``, used in place.

Nothing is copied: the manifest points into the folder. Every file is still decoded once, so an
unreadable or non-image file is skipped and listed in the report instead of failing training later.
dvc.yaml lists the folder among download's deps, so DVC hashes its files and a changed, added or
removed photo reruns download and whatever its manifest changes.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..images import open_rgb, try_each
from ...layout import SOURCE_SPLITS
from ..manifest import sha256_of
from ...params import FolderSource


def scan(root: Path, key: str) -> list[tuple[str, str, Path]]:
    """(split, class, file) for each file directly in ``root/<split>/<class>/``, sorted.

    Hidden names (``.DS_Store``, ``._x.jpg``) are ignored; a missing split folder is an error
    naming ``key``, the param that pointed here.
    """
    for split in SOURCE_SPLITS:
        if not (root / split).is_dir():
            raise DataError(f"{key}: {root} has no {split}/ folder (expected train/<class>/* and test/<class>/*)")
    items = []
    for split in SOURCE_SPLITS:
        for class_dir in sorted((root / split).iterdir()):
            if class_dir.is_dir() and not class_dir.name.startswith("."):
                items += [
                    (split, class_dir.name, path)
                    for path in sorted(class_dir.iterdir())
                    if path.is_file() and not path.name.startswith(".")
                ]
    if not items:
        raise DataError(f"{key}: {root} has no files in train/<class>/ or test/<class>/")
    return items


def collect(config: FolderSource, max_pixels: int) -> tuple[list[dict], list[str]]:
    """Manifest rows for the readable images (paths into the folder) and why the others were skipped."""
    root = Path(config.path)
    if not root.is_dir():
        raise DataError(f"download.folder.path: '{config.path}' is not a directory")
    items = scan(root, "download.folder.path")
    results = try_each(
        lambda path: (open_rgb(path, max_pixels).size, sha256_of(path)), [path for *_, path in items], "checking images"
    )
    rows, skipped = [], []
    for (split, name, path), result in zip(items, results):
        if isinstance(result, str):
            skipped.append(result)
            continue
        (width, height), digest = result
        rows.append(
            {
                "path": path.as_posix(),
                "split": split,
                "class": name,
                "source": "folder",
                "sha256": digest,
                "width": width,
                "height": height,
            }
        )
    return rows, skipped
