"""``data/raw/manifest.csv``: one row per accepted image, the same columns for every source.

The licence and attribution columns are what CC-BY photos legally need when the data is shared; the
taxon columns (``taxonomy.py``) are the class's, on each of its rows, empty where a source has none.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from ..atomic import write_csv, write_json
from ..errors import DataError
from ..layout import MANIFEST_FILE as MANIFEST
from ..layout import RAW_DIR
from ..layout import RAW_REPORT_FILE as REPORT
from .taxonomy import MANIFEST_COLUMNS as TAXON_COLUMNS

COLUMNS = [
    "path",
    "split",
    "class",
    "source",
    "observation_id",
    "photo_id",
    "url",
    "license",
    "attribution",
    "sha256",
    "width",
    "height",
    *TAXON_COLUMNS,
]
CREDIT_COLUMNS = ["license", "attribution", "url"]
# How reports name each licence code of params.LICENSE_CODES (and the sample source's cc0).
LICENSE_NAMES = {
    "cc0": "CC0 (no rights reserved)",
    "cc-by": "CC BY",
    "cc-by-nc": "CC BY-NC",
    "cc-by-sa": "CC BY-SA",
    "cc-by-nd": "CC BY-ND",
    "cc-by-nc-sa": "CC BY-NC-SA",
    "cc-by-nc-nd": "CC BY-NC-ND",
}
OBSERVATION_URL = "https://www.inaturalist.org/observations/{}"
# docs/data-sources.md: the iNat competitions allow non-commercial research only and forbid
# redistributing their images, which a report or gallery showing them would do.
COMPETITION_TERMS = "the iNat competition's terms forbid redistributing its images"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(raw_dir: Path, rows: list[dict], skipped: list[str]) -> pd.DataFrame:
    """Write the manifest and a report of skipped files; rows are sorted so bytes are stable."""
    frame = pd.DataFrame([{column: row.get(column, "") for column in COLUMNS} for row in rows], columns=COLUMNS)
    frame = frame.sort_values(["split", "class", "path"], kind="stable").reset_index(drop=True)
    write_csv(raw_dir / MANIFEST, frame)
    counts = frame.groupby(["split", "class"]).size()
    report = {
        "images": int(len(frame)),
        "per_split": {split: {cls: int(n) for cls, n in counts[split].items()} for split in counts.index.levels[0]},
        "licenses": {str(k): int(v) for k, v in frame["license"].value_counts().sort_index().items()},
        "skipped": sorted(skipped),
    }
    write_json(raw_dir / REPORT, report)
    return frame


def read_manifest(raw_dir: Path = RAW_DIR) -> pd.DataFrame:
    path = Path(raw_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: missing; run the download stage first (dvc repro download)")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in ("path", "split", "class") if column not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(missing)}")
    return frame


def read_report(raw_dir: Path = RAW_DIR) -> dict:
    path = Path(raw_dir) / REPORT
    if not path.is_file():
        raise DataError(f"{path}: missing; run the download stage first (dvc repro download)")
    return json.loads(path.read_text())


def photo_credits(paths: list[str], manifest: pd.DataFrame) -> pd.DataFrame:
    """``license``, ``attribution`` and ``url`` of each path, in order: what showing or naming a photo
    must carry (every CC licence but CC0 requires attribution). ``url`` is the iNaturalist observation
    page where there is one (it shows the photo with its credit), else the manifest's ``url``; a path
    the manifest lacks gets empty credits."""
    frame = manifest.drop_duplicates("path").set_index("path")
    rows = []
    for path in paths:
        row = frame.loc[path] if path in frame.index else {}
        observation = str(row.get("observation_id", "") or "")
        url = OBSERVATION_URL.format(observation) if observation else str(row.get("url", "") or "")
        rows.append({"license": str(row.get("license", "") or ""), "attribution": str(row.get("attribution", "") or ""),
                     "url": url})
    return pd.DataFrame(rows, columns=CREDIT_COLUMNS)


def showing_forbidden(source: str, layout: str) -> str | None:
    """Why the photos of this ``download.source`` (and archive ``layout``) must not be drawn, or None."""
    return COMPETITION_TERMS if source == "archive" and layout == "inat_json" else None
