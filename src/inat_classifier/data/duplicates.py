"""Leakage check: photos of a later split (val, test) that are copies of an earlier split's photos.

The same photo uploaded twice, or re-encoded and resized by a mirror, inflates test accuracy: the
model is scored on what it trained on. Exact copies are caught by their file bytes, altered ones
by a perceptual hash (pHash) within a small Hamming distance. A leaked photo is dropped from the
later split, never from training, so the fix only ever makes the evaluation stricter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import imagehash
import numpy as np

from .images import DEFAULT_MAX_PIXELS, ImageError, open_rgb, try_each
from ..layout import SPLITS
from .manifest import sha256_of

MAX_DISTANCE = 4  # of 64 pHash bits: re-encodes and small rescales stay within it, different photos rarely do
# pHash looks at a 32 x 32 thumbnail: decoding a JPEG at a reduced scale saves most of the time on photos.
_DRAFT = 256
_NO_MATCH = np.iinfo(np.int64).max
_CHUNK = 512  # later-split images compared at once: bounds the distance matrix to _CHUNK x earlier images


@dataclass(frozen=True)
class Duplicate:
    """``dropped_path`` (in the later split) copies ``kept_path``; ``distance`` is in pHash bits."""

    kept_split: str
    kept_path: str
    dropped_split: str
    dropped_path: str
    distance: int
    kind: Literal["exact", "near"]


def hash_image(path: str | Path, max_pixels: int) -> tuple[str, imagehash.ImageHash]:
    """(sha256 of the bytes, pHash); decoding it also proves the file readable (ImageError if not)."""
    image = open_rgb(path, max_pixels=max_pixels, draft=_DRAFT)
    try:
        digest = sha256_of(path)
    except OSError as exc:  # vanished or unreadable after decoding: skip it like any unreadable file
        raise ImageError(f"{path}: {exc}") from None
    return digest, imagehash.phash(image)


def image_hashes(
    paths: Sequence[str | Path], max_pixels: int = DEFAULT_MAX_PIXELS, desc: str | None = None
) -> dict[str, tuple[str, imagehash.ImageHash]]:
    """``str(path) -> (sha256 of the file's bytes, pHash)`` for the readable images.

    Unreadable files are left out silently: the subset stage reports them.
    """
    results = try_each(lambda path: hash_image(path, max_pixels), paths, desc)
    return {str(path): result for path, result in zip(paths, results) if not isinstance(result, str)}


def _as_uint64(phash: imagehash.ImageHash) -> np.uint64:
    return np.uint64(int(str(phash), 16))


def find_cross_split_duplicates(
    splits: Mapping[str, Sequence[str | Path]],
    max_distance: int = MAX_DISTANCE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    desc: str | None = None,
    hashes: Mapping[str, tuple[str, imagehash.ImageHash]] | None = None,
) -> list[Duplicate]:
    """Each image of a later split that copies an image of an earlier one, with its closest match.

    Splits are ordered train < val < test (other names after these, in the given order); copies
    within one split are not leakage and are not reported. Each dropped image is reported once,
    against an exact copy if there is one, else the nearest hash (ties: earlier split, then
    path). Results are sorted by dropped split, then path, whatever the input order. ``hashes``
    (from :func:`image_hashes`) saves decoding the images again.
    """
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    order = sorted(splits, key=lambda name: SPLITS.index(name) if name in SPLITS else len(SPLITS))
    members = {name: sorted({str(path) for path in splits[name]}) for name in order}
    unique = sorted({path for paths in members.values() for path in paths})
    if hashes is None:
        hashes = image_hashes(unique, max_pixels, desc)

    # One row per (split, readable image) in split order, then path order: argmin picks the earliest.
    rows = [(name, path) for name in order for path in members[name] if path in hashes]
    if not rows:
        return []
    digests = np.unique([hashes[path][0] for _, path in rows], return_inverse=True)[1]
    bits = np.array([_as_uint64(hashes[path][1]) for _, path in rows], dtype=np.uint64)
    split_of = np.array([order.index(name) for name, _ in rows])

    found = []
    for rank in range(1, len(order)):
        earlier = np.flatnonzero(split_of < rank)
        later = np.flatnonzero(split_of == rank)
        if not len(earlier) or not len(later):
            continue
        for start in range(0, len(later), _CHUNK):
            chunk = later[start : start + _CHUNK]
            distance = np.bitwise_count(bits[chunk, None] ^ bits[None, earlier]).astype(np.int64)
            exact = digests[chunk, None] == digests[None, earlier]
            # exact copies rank before any near one (-1), non-matches last
            score = np.where(exact, -1, np.where(distance <= max_distance, distance, _NO_MATCH))
            best = score.argmin(axis=1)
            for i, (row, column) in enumerate(zip(chunk, best)):
                if score[i, column] == _NO_MATCH:
                    continue
                kept = earlier[column]
                is_exact = bool(exact[i, column])
                found.append(
                    Duplicate(
                        kept_split=rows[kept][0],
                        kept_path=rows[kept][1],
                        dropped_split=rows[row][0],
                        dropped_path=rows[row][1],
                        distance=0 if is_exact else int(distance[i, column]),
                        kind="exact" if is_exact else "near",
                    )
                )
    return found
