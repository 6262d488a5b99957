"""Names from outside (taxa from the API, categories from a JSON, archive folders) never become paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import fetch, write_image
from helpers.fake_inaturalist import FakeInaturalist, Observation, Photo, Taxon, World
from inat_classifier.errors import DataError
from inat_classifier.data.http import HttpSettings
from inat_classifier.data.manifest import read_manifest
from inat_classifier.params import parse_params
from inat_classifier.data.sources.paths import class_folders, inside
from test_archive import digest, pack

FAST = HttpSettings(timeout=(2.0, 2.0), backoff=0.01, trust_env=False, sleep=lambda seconds: None)
CLIMBER = "../../../x"  # from <root>/a/b/.raw.*.tmp/train/ this climbs to <root>/a/x


def files_outside(top: Path, raw: Path, cache: Path) -> list[str]:
    return sorted(p.as_posix() for p in top.rglob("*")
                  if p.is_file() and raw not in p.parents and cache not in p.parents)


def test_class_folders_are_safe_distinct_and_short():
    names = ["..", ".", "a/b", "a\\b", "a_b", "x\x00y", "tab\there", "É" * 200, "Abc", "abc", ".hidden", "", CLIMBER]
    folders = class_folders(names)
    assert set(folders) == set(names)
    values = list(folders.values())
    assert len({v.casefold() for v in values}) == len(values)  # no collisions, not even by case
    for folder in values:
        assert not set(folder) & {"/", "\\", "\x00", "\t"} and not folder.startswith(".")
        assert 0 < len(folder.encode()) <= 255
    assert class_folders(["Catharus ustulatus"]) == {"Catharus ustulatus": "Catharus ustulatus"}


def test_inside_refuses_what_resolves_elsewhere(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    assert inside(tmp_path / "root", tmp_path / "root" / "a" / "b.jpg")
    for escape in (tmp_path / "root" / ".." / "x", tmp_path / "root" / "link" / "x"):
        with pytest.raises(DataError, match="outside"):
            inside(tmp_path / "root", escape)


def test_a_taxon_named_like_a_path_stays_in_data_raw(tmp_path):
    taxa = [Taxon(1, CLIMBER), Taxon(2, "Bb bb")]
    observations = [Observation(10 + i, 1 + i % 2, 2017 + i // 2, [Photo(800 + i)]) for i in range(4)]
    raw, cache = tmp_path / "a" / "b" / "raw", tmp_path / "cache"
    with FakeInaturalist(World(taxa, observations)) as fake:
        inat = {"taxa": [1, 2], "max_per_class": {"train": 1, "test": 1}, "api_url": fake.api_url,
                "photo_hosts": ["127.0.0.1"], "concurrency": 1}
        fetch(parse_params({"download": {"source": "inaturalist", "inaturalist": inat}}), raw, cache, FAST)
    assert files_outside(tmp_path, raw, cache) == []
    manifest = read_manifest(raw)
    assert sorted(set(manifest["class"])) == [CLIMBER, "Bb bb"]  # the real name is kept
    assert all(raw in Path(path).resolve().parents for path in manifest.path)


def test_category_names_like_paths_stay_in_data_raw(tmp_path):
    tree = tmp_path / "tree"
    categories = [{"id": 0, "name": CLIMBER, "supercategory": "Aves"}, {"id": 1, "name": "A/B", "supercategory": "Aves"},
                  {"id": 2, "name": "a/b", "supercategory": "Aves"}]
    for split in ("train", "val"):
        images = [{"id": i, "file_name": f"img/{split}{i}.jpg", "license": 1} for i in range(3)]
        for image in images:
            write_image(tree / image["file_name"], seed=image["id"])
        annotations = [{"id": i, "image_id": i, "category_id": i} for i in range(3)]
        (tree / f"{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories, "licenses": []}))
    archive = pack(tree, tmp_path / "inat.tar")
    config = {"url": str(archive), "sha256": digest(archive), "layout": "inat_json", "train_json": "train.json",
              "test_json": "val.json", "supercategories": []}
    raw, cache = tmp_path / "a" / "b" / "raw", tmp_path / "cache"
    fetch(parse_params({"download": {"source": "archive", "archive": config}}), raw, cache_dir=cache)
    assert files_outside(tmp_path, raw, cache) == [archive.as_posix()] + sorted(
        p.as_posix() for p in tree.rglob("*") if p.is_file())
    manifest = read_manifest(raw)
    assert sorted(manifest["class"]) == sorted([CLIMBER, "A/B", "a/b"] * 2)
    assert len({Path(path).parent.name.casefold() for path in manifest.path}) == 3
