"""Stage 2: pick the classes, cap them, split train into train and validation, drop leaked copies."""

from inat_classifier import stage

stage.validate()  # before the imports below load TensorFlow: a params typo prints one line, nothing else

from dataclasses import asdict

import pandas as pd

from inat_classifier.atomic import atomic_dir, write_csv, write_json
from inat_classifier.data.classnames import write_class_names
from inat_classifier.layout import CLASSES_FILE, SUBSET_DIR, SUBSET_METRICS
from inat_classifier.data.manifest import read_manifest
from inat_classifier.params import Params
from inat_classifier.data.taxonomy import from_manifest
from inat_classifier.data.subset import DUPLICATE_COLUMNS, balance_summary, make_subset


def main(params: Params) -> None:
    manifest = read_manifest()
    subset = make_subset(manifest, params.subset, params.data.max_pixels, params.seed)
    for problem in subset.skipped:
        print(f"skipped: {problem}")
    summary = balance_summary(subset)
    with atomic_dir(SUBSET_DIR) as out:
        for split, frame in subset.splits.items():
            write_csv(out / f"{split}.csv", frame)
        write_class_names(out / CLASSES_FILE, from_manifest(manifest, subset.classes))  # with their taxonomy
        write_json(out / "skipped.json", subset.skipped)
        write_csv(out / "duplicates.csv", pd.DataFrame([asdict(d) for d in subset.duplicates], columns=DUPLICATE_COLUMNS))
        if params.data.format == "tfrecord":  # decoded and resized once, for every later stage
            size, shard_size, cap = params.data.image_size, params.data.shard_size, params.data.max_pixels
            write_shards(out, subset.splits, params.data.tfrecord_dir, size, shard_size, cap)
    write_json(SUBSET_METRICS, summary)
    print(f"classes: {', '.join(subset.classes)}")
    print(" ".join(f"{split}={summary[split]['images']}" for split in subset.splits))
    for copy in subset.duplicates:
        print(f"{copy.kind} duplicate: {copy.dropped_split} {copy.dropped_path} copies {copy.kept_split} {copy.kept_path}")
    if subset.duplicates:
        action = "dropped" if subset.dropped_duplicates else "kept (subset.drop_duplicates: false)"
        print(f"{len(subset.duplicates)} cross-split duplicates {action}; listed in {SUBSET_DIR}/duplicates.csv")


def write_shards(
    out, splits: dict[str, pd.DataFrame], tfrecord_dir: str, image_size: int, shard_size: int, max_pixels: int
) -> None:
    """The splits' shards in ``tfrecord_dir`` (empty: inside ``out``), listed in ``out``'s index."""
    from inat_classifier.data.records import DEFAULT_DIR, write_index, write_split  # TensorFlow: ~5 s, tfrecord only

    directory = tfrecord_dir or DEFAULT_DIR
    location = directory if tfrecord_dir else str(out / DEFAULT_DIR)
    shards = {
        split: write_split(location, split, frame["path"].tolist(), frame["label"].tolist(), image_size, shard_size,
                           max_pixels)
        for split, frame in splits.items()
    }
    counts = {split: len(frame) for split, frame in splits.items()}
    write_index(out, shards, directory, counts, image_size, shard_size)


if __name__ == "__main__":
    stage.run(main)
