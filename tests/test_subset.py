import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import write_image
from inat_classifier.errors import DataError
from inat_classifier.params import parse_params
from inat_classifier.data.subset import Subset, balance_summary, choose_classes, make_subset


def manifest_of(tmp_path, counts: dict[str, dict[str, int]]) -> pd.DataFrame:
    rows = []
    for split, per_class in counts.items():
        for name, count in per_class.items():
            for i in range(count):  # every picture different: no accidental cross-split copies
                path = write_image(tmp_path / split / name / f"{i}.jpg", size=(24, 24), seed=len(rows))
                rows.append({"path": str(path), "split": split, "class": name})
    return pd.DataFrame(rows)


def subset_of(manifest: pd.DataFrame, params) -> Subset:
    return make_subset(manifest, params.subset, params.data.max_pixels, params.seed)


COUNTS = {
    "train": {"a": 20, "b": 16, "c": 12, "d": 8, "train_only": 30},
    "test": {"a": 6, "b": 6, "c": 6, "d": 6, "test_only": 9},
}


def test_picks_the_most_frequent_classes_present_in_both_years(tmp_path):
    manifest = manifest_of(tmp_path, COUNTS)
    assert choose_classes(manifest, [], 3) == ["a", "b", "c"]
    assert choose_classes(manifest, ["d", "a"], 99) == ["a", "d"]


def test_unknown_or_one_year_class_is_a_clear_error(tmp_path):
    manifest = manifest_of(tmp_path, COUNTS)
    with pytest.raises(DataError, match="subset.classes: 'train_only' not in both splits; available: a, b, c, d"):
        choose_classes(manifest, ["a", "train_only"], 2)
    with pytest.raises(DataError, match="subset.num_classes: 5 requested but only 4"):
        choose_classes(manifest, [], 5)


def test_splits_are_stratified_disjoint_and_test_comes_only_from_the_test_year(tmp_path):
    manifest = manifest_of(tmp_path, COUNTS)
    subset = subset_of(manifest, parse_params({"subset": {"num_classes": 4, "val_fraction": 0.25}}))
    train, val, test = (subset.splits[s] for s in ("train", "val", "test"))
    assert subset.classes == ["a", "b", "c", "d"]
    assert set(train.path).isdisjoint(val.path)
    assert set(test.path) == set(manifest[(manifest.split == "test") & manifest["class"].isin(subset.classes)].path)
    assert val["class_name"].value_counts().to_dict() == {"a": 5, "b": 4, "c": 3, "d": 2}
    assert list(train.columns) == ["path", "label", "class_name"]
    assert dict(zip(train.class_name, train.label)) == {"a": 0, "b": 1, "c": 2, "d": 3}


def test_caps_apply_per_class_and_year(tmp_path):
    manifest = manifest_of(tmp_path, COUNTS)
    subset = subset_of(manifest, parse_params({"subset": {"max_per_class": 5, "val_fraction": 0.2}}))
    summary = balance_summary(subset)
    assert summary["test"]["per_class"] == {"a": 5, "b": 5, "c": 5, "d": 5}
    assert summary["train"]["images"] + summary["val"]["images"] == 20


def test_unreadable_images_are_dropped_and_listed(tmp_path):
    manifest = manifest_of(tmp_path, COUNTS)
    broken = manifest[(manifest.split == "train") & (manifest["class"] == "a")].path.iloc[0]
    open(broken, "wb").write(b"\x00garbage")
    subset = subset_of(manifest, parse_params({}))
    assert len(subset.skipped) == 1 and broken in subset.skipped[0]
    assert broken not in set(pd.concat(subset.splits.values()).path)


def test_same_seed_same_subset(tmp_path):
    manifest = manifest_of(tmp_path, COUNTS)
    first = subset_of(manifest, parse_params({"seed": 3}))
    second = subset_of(manifest, parse_params({"seed": 3}))
    for split in first.splits:
        pd.testing.assert_frame_equal(first.splits[split], second.splits[split])


def test_balance_summary_reports_the_imbalance_ratio(tmp_path):
    subset = subset_of(manifest_of(tmp_path, COUNTS), parse_params({}))
    summary = balance_summary(subset)
    counts = summary["train"]["per_class"]
    assert summary["train"]["imbalance_ratio"] == round(max(counts.values()) / min(counts.values()), 4)


def test_a_photo_copied_from_train_into_test_is_caught_reported_and_dropped_from_test(tmp_path):
    manifest = manifest_of(tmp_path, COUNTS)
    train_a = manifest[(manifest.split == "train") & (manifest["class"] == "a")].path.tolist()
    test_a = manifest[(manifest.split == "test") & (manifest["class"] == "a")].path.tolist()
    shutil.copyfile(train_a[0], test_a[0])  # the same file uploaded twice
    Image.open(train_a[1]).resize((30, 30)).save(test_a[1], quality=80)  # a re-encoded, resized copy

    kept = subset_of(manifest, parse_params({"subset": {"drop_duplicates": False}}))
    dropped = subset_of(manifest, parse_params({}))
    copies = {(d.dropped_path, d.kind) for d in dropped.duplicates}
    assert copies == {(test_a[0], "exact"), (test_a[1], "near")}
    assert {d.kept_path for d in dropped.duplicates} <= set(train_a)
    assert {test_a[0], test_a[1]} <= set(kept.splits["test"].path)
    assert not {test_a[0], test_a[1]} & set(dropped.splits["test"].path)
    pd.testing.assert_frame_equal(kept.splits["train"], dropped.splits["train"])  # training keeps its data
    summary = balance_summary(dropped)["duplicates"]
    assert summary == {"exact": 1, "near": 1, "in_val": 0, "in_test": 2, "dropped": 2}
    assert balance_summary(kept)["duplicates"]["dropped"] == 0


@pytest.mark.parametrize("stage", ["download", "subset"])
def test_the_data_stages_do_not_load_tensorflow_for_image_files(stage):
    """TensorFlow takes about 5 s to import; with data.format: files these stages never use it."""
    root = Path(__file__).parents[1]
    code = (f"import runpy, sys; runpy.run_path('stages/{stage}.py', run_name='imported')\n"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
