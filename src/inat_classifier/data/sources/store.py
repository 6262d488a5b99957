"""Accepting a downloaded or extracted image: decode it once, keep it as an upright RGB JPEG.

Storing the decoded pixels (not the original bytes) means every file in ``data/raw`` is known to
decode, and grayscale, CMYK, palette and alpha images, or EXIF-rotated ones, are already plain
upright RGB on disk for every later stage and for anyone browsing the folder.
"""

from __future__ import annotations

from pathlib import Path

from ...atomic import atomic_path
from ..images import open_rgb, try_each

JPEG_QUALITY = 95


def store_rgb_jpeg(source: Path, target: Path, max_pixels: int) -> tuple[int, int]:
    """Write ``source`` to ``target`` as RGB JPEG (atomically); its size, or :class:`ImageError`."""
    image = open_rgb(source, max_pixels)
    with atomic_path(target) as tmp:
        image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
    return image.size


def store_many(pairs: list[tuple[Path, Path]], max_pixels: int, desc: str) -> list[tuple[int, int] | str]:
    """:func:`store_rgb_jpeg` over (source, target) pairs in threads; a bad image gives its reason."""
    return try_each(lambda pair: store_rgb_jpeg(pair[0], pair[1], max_pixels), pairs, desc)
