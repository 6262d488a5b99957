"""The folder source: a local train/test tree used in place, with unreadable files reported."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, copy_repository, fetch, write_image
from inat_classifier.errors import DataError
from inat_classifier.data.manifest import COLUMNS, read_manifest, sha256_of
from inat_classifier.params import parse_params


def folder_params(path) -> object:
    return parse_params({"download": {"source": "folder", "folder": {"path": str(path)}}})


def test_folder_is_used_in_place_and_bad_files_are_reported(tmp_path):
    root = tmp_path / "photos"
    for split in ("train", "test"):
        for cls in ("Catharus guttatus", "Procyon lotor"):
            write_image(root / split / cls / "a.jpg", seed=1)
    write_image(root / "train" / "Procyon lotor" / "b.png", mode="P", fmt="PNG")
    (root / "train" / "Procyon lotor" / "notes.txt").write_text("not a photo")
    (root / "test" / "Procyon lotor" / "empty.jpg").write_bytes(b"")
    (root / "test" / "Procyon lotor" / "._a.jpg").write_bytes(b"macOS resource fork")
    fetch(folder_params(root), tmp_path / "raw", cache_dir=tmp_path / "cache")

    manifest = read_manifest(tmp_path / "raw")
    assert list(manifest.columns) == COLUMNS and set(manifest.source) == {"folder"}
    assert len(manifest) == 5
    assert all(path.startswith(root.as_posix()) for path in manifest.path)
    assert all(sha256_of(row.path) == row.sha256 for row in manifest.itertuples())
    assert {p.name for p in (tmp_path / "raw").iterdir()} == {"manifest.csv", "report.json"}  # nothing copied
    skipped = json.loads((tmp_path / "raw" / "report.json").read_text())["skipped"]
    assert len(skipped) == 2 and any("notes.txt" in s for s in skipped) and any("empty.jpg" in s for s in skipped)


def test_missing_folder_or_split_is_one_line_naming_the_param(tmp_path):
    with pytest.raises(DataError, match="download.folder.path: '.*nowhere' is not a directory"):
        fetch(folder_params(tmp_path / "nowhere"), tmp_path / "raw", cache_dir=tmp_path / "cache")
    write_image(tmp_path / "only_train" / "train" / "a" / "x.jpg")
    with pytest.raises(DataError, match="download.folder.path: .*only_train has no test/ folder"):
        fetch(folder_params(tmp_path / "only_train"), tmp_path / "raw", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "raw").exists()


def test_the_default_folder_is_in_the_repository_so_dvc_can_hash_it():
    path = REPO / parse_params({"download": {"source": "folder"}}).download.folder.path
    assert path.is_dir() and (path / "README.md").is_file()


def test_dvc_notices_a_changed_photo_in_the_folder(tmp_path):
    repo = copy_repository(tmp_path / "repo", {"download": {"source": "folder"}})
    photos = repo.root / "data" / "photos"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            write_image(photos / split / cls / "1.jpg", seed=len(cls + split))
    assert repo.run("git", "status", "--porcelain").stdout == ""  # the photos are DVC's, not git's
    repo.dvc("repro", "download")
    manifest = read_manifest(repo.root / "data" / "raw")
    assert sorted(manifest.path)[0] == "data/photos/test/a/1.jpg"  # relative, as the param says
    assert "up to date" in repo.dvc("status", "download")

    write_image(photos / "train" / "a" / "1.jpg", seed=99)
    changed = repo.dvc("status", "download")
    assert "changed deps" in changed and "data/photos" in changed
    assert "Running stage 'download'" in repo.dvc("repro", "download")
    assert sha256_of(repo.root / "data/photos/train/a/1.jpg") in set(read_manifest(repo.root / "data" / "raw").sha256)
