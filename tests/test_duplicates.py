"""Cross-split duplicates (leakage): exact copies, altered copies, and what must not be flagged."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
from PIL import Image

from inat_classifier.data.duplicates import Duplicate, find_cross_split_duplicates, image_hashes


def photo(seed: int, size: int = 128) -> Image.Image:
    """Smooth random colour blocks: structure pHash can see (a flat colour would hash to all zeros)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((size, size), Image.Resampling.BILINEAR)


@pytest.fixture
def files(tmp_path):
    """train: a, b, c (c copies b); val: v; test: exact copy of a, altered copy of b, a new photo."""
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    (tmp_path / "test").mkdir()
    a, b, v = tmp_path / "train/a.png", tmp_path / "train/b.png", tmp_path / "val/v.png"
    photo(1).save(a)
    photo(2).save(b)
    shutil.copy(b, tmp_path / "train/c.png")
    photo(3).save(v)
    shutil.copy(a, tmp_path / "test/a_copy.png")
    photo(2).resize((115, 115), Image.Resampling.BICUBIC).save(tmp_path / "test/b_reencoded.jpg", quality=70)
    photo(4).save(tmp_path / "test/new.png")
    return tmp_path


def split_paths(root):
    return {split: sorted(str(p) for p in (root / split).iterdir()) for split in ("train", "val", "test")}


def test_exact_and_altered_copies_across_splits_are_caught_and_new_photos_are_not(files):
    found = find_cross_split_duplicates(split_paths(files))
    assert found == [
        Duplicate("train", str(files / "train/a.png"), "test", str(files / "test/a_copy.png"), 0, "exact"),
        Duplicate("train", str(files / "train/b.png"), "test", str(files / "test/b_reencoded.jpg"),
                  found[1].distance, "near"),
    ]
    assert 0 <= found[1].distance <= 4


def test_copies_within_one_split_are_not_leakage(files):
    only_train = find_cross_split_duplicates({"train": split_paths(files)["train"]})
    assert only_train == []
    found = find_cross_split_duplicates(split_paths(files))
    assert not any(d.dropped_path.endswith("c.png") for d in found)


def test_the_later_split_loses_the_copy_whatever_the_input_order(files):
    shutil.copy(files / "val/v.png", files / "test/v_copy.png")
    paths = split_paths(files)
    found = find_cross_split_duplicates({"test": paths["test"][::-1], "train": paths["train"], "val": paths["val"]})
    assert [(d.kept_split, d.dropped_split) for d in found] == [("train", "test"), ("train", "test"), ("val", "test")]
    assert found == find_cross_split_duplicates(paths)
    # a val photo copied from training is dropped from val, not from train
    shutil.copy(files / "train/a.png", files / "val/a_in_val.png")
    found = find_cross_split_duplicates(split_paths(files))
    assert found[0].dropped_split == "val" and found[0].kept_path.endswith("a.png") and found[0].kind == "exact"
    # the test copy of a reports the earliest split it leaks from
    assert {d.dropped_path.rsplit("/", 1)[1]: d.kept_split for d in found}["a_copy.png"] == "train"


def test_a_zero_distance_still_catches_exact_copies(files):
    found = find_cross_split_duplicates(split_paths(files), max_distance=0)
    kinds = {d.dropped_path.rsplit("/", 1)[1]: d.kind for d in found}
    assert kinds["a_copy.png"] == "exact"
    with pytest.raises(ValueError):
        find_cross_split_duplicates(split_paths(files), max_distance=-1)


def test_unreadable_files_are_skipped(files):
    (files / "test/broken.jpg").write_bytes(b"not an image")
    paths = split_paths(files)
    paths["test"].append(str(files / "test/missing.jpg"))
    found = find_cross_split_duplicates(paths)
    assert len(found) == 2
    hashes = image_hashes(paths["test"])
    assert str(files / "test/broken.jpg") not in hashes and str(files / "test/missing.jpg") not in hashes
    digest, phash = hashes[str(files / "test/a_copy.png")]
    assert digest == hashlib.sha256((files / "train/a.png").read_bytes()).hexdigest()
    assert phash - image_hashes([files / "train/a.png"])[str(files / "train/a.png")][1] == 0


def test_nothing_readable_means_nothing_found(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    assert find_cross_split_duplicates({"train": [tmp_path / "x.jpg"], "test": []}) == []
