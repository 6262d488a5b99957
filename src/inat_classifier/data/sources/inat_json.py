"""The iNat competition JSON (COCO style), read as a stream in bounded memory.

The full iNat 2017/2018 files hold hundreds of thousands of image and annotation records (up to a
few hundred MB); ``json.load`` would hold all of them as Python objects at once, several times the
file's size. ``ijson`` (a C parser) streams them instead, one record at a time: what stays in memory
is the small tables (categories, licences), one category id per image and the items kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ijson


def records(path: Path, section: str) -> Iterator[dict]:
    """The records of one top-level list (``images``, ``annotations``, ...), one at a time."""
    with open(path, "rb") as handle:
        yield from ijson.items(handle, f"{section}.item", use_float=True)


def image_labels(path: Path, categories: set) -> dict[object, object]:
    """Category id per image id, for images of ``categories`` only: the others cost no memory.

    iNat competition images have one annotation each; were there more, the first wanted one wins.
    """
    labels: dict[object, object] = {}
    for annotation in records(path, "annotations"):
        if annotation["category_id"] in categories:
            labels.setdefault(annotation["image_id"], annotation["category_id"])
    return labels
