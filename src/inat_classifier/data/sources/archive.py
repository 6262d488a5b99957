"""``archive``: a tar or zip of photos, checked against its sha256, then extracted safely.

The archive is fetched into the download cache (resumable, see ``http.py``) or read in place from a
local path; either way its sha256 must match ``download.archive.sha256`` before anything is opened.
``unpack.py`` extracts it by itself, without tarfile's filters: one bad member (an absolute path,
``..``, any link, a device or FIFO) or a cap exceeded refuses the whole archive. Extraction lands in
the cache, keyed by the digest, so a rerun (DVC deletes ``data/raw`` first) does not unpack again. Then every image is decoded once and
stored as RGB JPEG under ``data/raw/<split>/<class>/``.

Layouts: ``folders`` (``train/<class>/*``, ``test/<class>/*``) or ``inat_json``, the iNat competition
format (COCO-style JSON beside the image tree; see ``docs/data-sources.md``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import ijson

from ...atomic import atomic_dir, replace
from ...errors import DataError
from ..http import Client, HttpSettings
from ..manifest import sha256_of
from ...params import ArchiveSource
from ..taxonomy import Taxon, from_category
from . import folder, inat_json
from .paths import MAX_NAME_BYTES, class_folders, inside, safe_component
from .store import store_many
from .unpack import extract, relative_parts

CACHE_NAME = "archive"
ARCHIVE_DEADLINE = 24 * 3600.0  # seconds; a rerun resumes from the .part file
IMAGE_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True)
class Item:
    """One image to accept: where it is in the extracted tree and what the manifest says about it."""

    split: str
    cls: str
    path: Path
    photo_id: str = ""
    license: str = ""
    attribution: str = ""
    taxon: Taxon | None = None  # the competition category's (inat_json)


def collect(
    config: ArchiveSource, out_dir: Path, max_pixels: int, cache_dir: Path, http: HttpSettings
) -> tuple[list[dict], list[str]]:
    store = cache_dir / CACHE_NAME
    archive = obtain(config, store, http)
    tree = store / f"{config.sha256}.d"
    if not tree.is_dir():
        with atomic_dir(tree) as tmp:  # removes what a killed extraction left
            extract(archive, tmp)
    if config.layout == "folders":
        root = _content_root(tree, ("train", "test"))
        items = [Item(split, cls, path) for split, cls, path in folder.scan(root, "download.archive.url")]
        skipped: list[str] = []
    else:
        items, skipped = inat_json_items(_content_root(tree, (config.train_json,)), config)
    rows, problems = _store(items, out_dir, max_pixels)
    return rows, skipped + problems


def obtain(config: ArchiveSource, store: Path, http: HttpSettings) -> Path:
    """The archive as a local file whose sha256 is ``config.sha256``, fetching it if it is a URL."""
    url, expected = config.url, config.sha256
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        cached = store / expected
        if cached.is_file():  # named by its digest when it was stored; checked again all the same
            if sha256_of(cached) == expected:
                return cached
            cached.unlink()  # damaged since (a power cut, a disk error): fetched again
        part = store / f"{expected}.part"
        with Client([url], dataclasses.replace(http, deadline=ARCHIVE_DEADLINE)) as client:  # its origin only
            client.fetch(url, part)
        actual = sha256_of(part)
        # Kept under its real digest: fixing a wrong sha256 param then needs no second download.
        replace(part, store / actual)
        path = store / actual
    else:
        path = Path(url2pathname(parts.path)) if parts.scheme == "file" else Path(url)
        if not path.is_file():
            raise DataError(f"download.archive.url: '{url}' is not a file")
        actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"download.archive.sha256: {url} has sha256 {actual}, not {expected} "
            "(the file changed or the digest is wrong); nothing was extracted"
        )
    return path


def _content_root(tree: Path, markers: tuple[str, ...]) -> Path:
    """``tree``, or its only folder when the archive wraps everything in one (``mydata/train/...``)."""
    if any((tree / marker).exists() for marker in markers):
        return tree
    entries = [entry for entry in tree.iterdir() if not entry.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else tree


def inat_json_items(root: Path, config: ArchiveSource) -> tuple[list[Item], list[str]]:
    """Labelled images of the wanted supercategories from the train and test JSON, streamed."""
    categories = _load_json(root, "categories_json", config.categories_json) if config.categories_json else None
    wanted = {name.lower() for name in config.supercategories}
    items, skipped = [], []
    taxa: dict[str, Taxon] = {}
    for split, key in (("train", "train_json"), ("test", "test_json")):
        name = getattr(config, key)
        path = _json_path(root, key, name)
        try:
            cats = {c["id"]: c for c in (categories if categories is not None else inat_json.records(path, "categories"))}
            if not cats:
                raise KeyError("categories")
            licenses = {lic["id"]: lic for lic in inat_json.records(path, "licenses")}
            kept = {i for i, c in cats.items() if not wanted or str(c.get("supercategory", "")).lower() in wanted}
            labels = inat_json.image_labels(path, kept)
            for image in inat_json.records(path, "images"):
                category = cats.get(labels.get(image["id"]))
                if category is None:
                    continue
                file_name = str(image["file_name"])
                if relative_parts(file_name) is None:
                    skipped.append(f"{name}: image {image['id']}: file_name '{file_name}' points outside the archive")
                    continue
                holder = image.get("rights_holder") or ""
                name = _class_name(category)
                if name not in taxa:  # one per class, shared by its images
                    taxa[name] = from_category(category, name)
                items.append(
                    Item(
                        split,
                        name,
                        root / file_name,
                        photo_id=str(image["id"]),
                        license=_license_code(licenses.get(image.get("license"))),
                        attribution=f"(c) {holder}" if holder else "",
                        taxon=taxa[name],
                    )
                )
        except ijson.JSONError as exc:
            raise DataError(f"download.archive.{key}: '{name}' is not valid JSON ({exc})") from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"download.archive.{key}: '{name}' is not in the iNat competition format ({exc!r})") from None
    if not items:
        raise DataError(
            f"download.archive.supercategories: no labelled images of {', '.join(config.supercategories)} "
            f"in {config.train_json} or {config.test_json}"
        )
    return sorted(items, key=lambda item: (item.split, item.cls, item.path.as_posix())), skipped


def _json_path(root: Path, key: str, name: str) -> Path:
    path = root / name
    if relative_parts(name) is None or not path.is_file():
        found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json"))[:10]
        raise DataError(f"download.archive.{key}: '{name}' is not in the archive (JSON files there: {found})")
    return path


def _load_json(root: Path, key: str, name: str) -> object:
    """A small JSON file (the 2018 categories), read whole."""
    path = _json_path(root, key, name)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"download.archive.{key}: '{name}' is not valid JSON ({exc})") from None


def _class_name(category: dict) -> str:
    """The real name, white space folded; its folder is made safe separately (``paths.class_folders``)."""
    name = " ".join(str(category.get("name", "")).split())
    return name or f"category {category['id']}"


def _license_code(license: dict | None) -> str:
    """cc-by-nc etc. from a Creative Commons licence URL, as the iNaturalist API writes codes."""
    if not license:
        return ""
    url = str(license.get("url", ""))
    if "publicdomain/zero" in url:
        return "cc0"
    if "/licenses/" in url:
        return "cc-" + url.split("/licenses/")[1].split("/")[0]
    return str(license.get("name", ""))


def _store(items: list[Item], out_dir: Path, max_pixels: int) -> tuple[list[dict], list[str]]:
    """Decode and store each item as ``<split>/<class>/<name>.jpg``; unreadable ones are reported."""
    taken: dict[Path, set[str]] = defaultdict(set)
    folders = class_folders(item.cls for item in items)
    pairs = []
    for item in items:
        folder_rel = Path(item.split) / folders[item.cls]
        target = out_dir / folder_rel / _jpeg_name(item.path.name, taken[folder_rel])
        pairs.append((item.path, inside(out_dir, target)))
    rows, skipped = [], []
    for item, (_, target), result in zip(items, pairs, store_many(pairs, max_pixels, "storing images")):
        if isinstance(result, str):
            skipped.append(result)
            continue
        rows.append(
            {
                "path": target.relative_to(out_dir).as_posix(),
                "split": item.split,
                "class": item.cls,
                "source": "archive",
                "photo_id": item.photo_id,
                "license": item.license,
                "attribution": item.attribution,
                "sha256": sha256_of(target),
                "width": result[0],
                "height": result[1],
                **(item.taxon.manifest_fields() if item.taxon else {}),
            }
        )
    return rows, skipped


def _jpeg_name(name: str, taken: set[str]) -> str:
    """The original name for JPEGs (stored as JPEG again), ``x.png.jpg`` for others; unique per folder."""
    name = safe_component(name, MAX_NAME_BYTES - 16)  # room for a counter and .jpg
    stem, suffix = os.path.splitext(name)
    candidate = name if suffix.lower() in IMAGE_SUFFIXES else f"{name}.jpg"
    counter = 1
    while candidate.lower() in taken:  # lower: two names differing in case clash on macOS and Windows
        candidate, counter = f"{stem}-{counter}.jpg", counter + 1
    taken.add(candidate.lower())
    return candidate
