"""Choose the classes, cap them, and carve a stratified validation split out of train.

The test split (the later year) is never used for training or model selection: validation comes
from the training year only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from .duplicates import Duplicate, find_cross_split_duplicates, image_hashes
from ..errors import DataError
from .images import ImageError, open_rgb
from ..params import Subset as SubsetParams

SPLIT_COLUMNS = ["path", "label", "class_name"]
DUPLICATE_COLUMNS = ["kept_split", "kept_path", "dropped_split", "dropped_path", "distance", "kind"]


@dataclass(frozen=True)
class Subset:
    classes: list[str]
    splits: dict[str, pd.DataFrame]  # train, val, test with SPLIT_COLUMNS
    skipped: list[str]
    duplicates: list[Duplicate]  # copies of an earlier split's photos in a later split
    dropped_duplicates: bool


def choose_classes(manifest: pd.DataFrame, explicit: list[str], count: int) -> list[str]:
    """Explicit classes, or the ``count`` most frequent in train among those present in both splits."""
    train = manifest.loc[manifest["split"] == "train", "class"].value_counts()
    test = manifest.loc[manifest["split"] == "test", "class"].value_counts()
    shared = sorted(set(train.index) & set(test.index))
    if explicit:
        unknown = [name for name in explicit if name not in shared]
        if unknown:
            raise DataError(
                f"subset.classes: {', '.join(map(repr, unknown))} not in both splits; "
                f"available: {', '.join(shared)}"
            )
        return sorted(explicit)
    if len(shared) < count:
        raise DataError(
            f"subset.num_classes: {count} requested but only {len(shared)} classes are in both splits "
            f"({', '.join(shared)})"
        )
    ranked = sorted(shared, key=lambda name: (-train[name], -test[name], name))
    return sorted(ranked[:count])


def readable(paths: list[str], max_pixels: int) -> tuple[list[bool], list[str], dict]:
    """Decode each image once: which are readable, why the others are not, and their hashes."""
    hashes = image_hashes(paths, max_pixels, "checking images")
    problems = []
    for path in paths:
        if path not in hashes:
            try:  # only the unreadable few are opened again, for their reason
                open_rgb(path, max_pixels, draft=64)
            except ImageError as exc:
                problems.append(str(exc))
    return [path in hashes for path in paths], problems, hashes


def _cap(frame: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """A seeded random ``cap`` images per class (all of a smaller class)."""
    if cap is None:
        return frame
    return frame.sample(frac=1.0, random_state=seed).groupby("class").head(cap).sort_index()


def make_subset(manifest: pd.DataFrame, config: SubsetParams, max_pixels: int, seed: int) -> Subset:
    """The chosen classes' readable photos in train, val and test, leaked copies found (and dropped)."""
    classes = choose_classes(manifest, config.classes, config.num_classes)
    chosen = manifest[manifest["class"].isin(classes)].copy()
    ok, skipped, hashes = readable(chosen["path"].tolist(), max_pixels)
    chosen = chosen[np.asarray(ok, dtype=bool)]
    label_of = {name: i for i, name in enumerate(classes)}
    chosen["label"] = chosen["class"].map(label_of)
    chosen["class_name"] = chosen["class"]
    chosen = chosen.sort_values(["split", "label", "path"], kind="stable")

    train_all = _cap(chosen[chosen["split"] == "train"], config.max_per_class, seed)
    test = _cap(chosen[chosen["split"] == "test"], config.max_per_class, seed)
    too_small = [name for name in classes if (train_all["class"] == name).sum() < 2]
    if too_small:
        raise DataError(f"classes with fewer than 2 readable training images: {', '.join(too_small)}")
    try:
        train, val = train_test_split(
            train_all, test_size=config.val_fraction, stratify=train_all["label"], random_state=seed
        )
    except ValueError as exc:
        raise DataError(f"subset.val_fraction: cannot split {len(train_all)} training images: {exc}") from None
    splits = {"train": train, "val": val, "test": test}
    duplicates = find_cross_split_duplicates({name: frame["path"] for name, frame in splits.items()}, hashes=hashes)
    if config.drop_duplicates:  # from the later split only: evaluation gets stricter, training keeps its data
        for name, frame in splits.items():
            leaked = {d.dropped_path for d in duplicates if d.dropped_split == name}
            splits[name] = frame[~frame["path"].isin(leaked)]
    splits = {
        name: frame.sort_values(["label", "path"], kind="stable")[SPLIT_COLUMNS].reset_index(drop=True)
        for name, frame in splits.items()
    }
    return Subset(classes, splits, skipped, duplicates, config.drop_duplicates)


def balance_summary(subset: Subset) -> dict:
    """Counts per split and class, the imbalance ratio (largest / smallest class), cross-split copies."""
    summary: dict = {"classes": len(subset.classes), "skipped_images": len(subset.skipped)}
    summary["duplicates"] = {
        "exact": sum(d.kind == "exact" for d in subset.duplicates),
        "near": sum(d.kind == "near" for d in subset.duplicates),
        "in_val": sum(d.dropped_split == "val" for d in subset.duplicates),
        "in_test": sum(d.dropped_split == "test" for d in subset.duplicates),
        "dropped": len(subset.duplicates) if subset.dropped_duplicates else 0,
    }
    for split, frame in subset.splits.items():
        counts = frame["class_name"].value_counts()
        per_class = {name: int(counts.get(name, 0)) for name in subset.classes}
        smallest = min(per_class.values())
        summary[split] = {
            "images": int(len(frame)),
            "imbalance_ratio": round(max(per_class.values()) / smallest, 4) if smallest else None,
            "per_class": per_class,
        }
    return summary
