"""Where ``data/raw`` comes from: each source writes the same layout and manifest columns."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_dir
from ..manifest import RAW_DIR, write_manifest
from ..params import Params
from . import sample


def download(params: Params, raw_dir: Path = RAW_DIR) -> None:
    """Build ``raw_dir`` from the configured source; it appears only once it is complete."""
    source = params.download.source
    with atomic_dir(raw_dir) as tmp:
        if source == "sample":
            rows = sample.generate(params.download.sample, params.seed, tmp)
            skipped: list[str] = []
        else:  # params validation only lets implemented sources through
            raise AssertionError(source)
        for row in rows:
            row["path"] = (raw_dir / row["path"]).as_posix()
        write_manifest(tmp, rows, skipped)
