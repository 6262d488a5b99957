"""Where ``data/raw`` comes from: each source writes the same layout and manifest columns."""

from __future__ import annotations

from pathlib import Path

from ...atomic import atomic_dir
from ..http import HttpSettings
from ...layout import DOWNLOAD_DIR, RAW_DIR
from ..manifest import write_manifest
from ...params import Download
from . import archive, folder, inaturalist, sample


def download(
    config: Download,
    max_pixels: int,
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = DOWNLOAD_DIR,
    http: HttpSettings = HttpSettings(),
) -> None:
    """Build ``raw_dir`` from the configured source; it appears only once it is complete.

    A photo over ``max_pixels`` (``data.max_pixels``) is skipped.
    """
    source = config.source
    with atomic_dir(raw_dir) as tmp:
        in_place = False  # the folder source's rows point at the folder itself
        skipped: list[str] = []
        if source == "sample":
            rows = sample.generate(config.sample, tmp)
        elif source == "inaturalist":
            rows, skipped = inaturalist.collect(config.inaturalist, tmp, max_pixels, cache_dir, http)
        elif source == "archive":
            rows, skipped = archive.collect(config.archive, tmp, max_pixels, cache_dir, http)
        elif source == "folder":
            rows, skipped = folder.collect(config.folder, max_pixels)
            in_place = True
        else:  # params validation only lets implemented sources through
            raise AssertionError(source)
        if not in_place:
            for row in rows:
                row["path"] = (raw_dir / row["path"]).as_posix()
        write_manifest(tmp, rows, skipped)
