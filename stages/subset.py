"""Stage 2: pick the classes, cap them, split train into train and validation."""

from inat_classifier import stage
from inat_classifier.atomic import atomic_dir, write_csv, write_json
from inat_classifier.manifest import read_manifest
from inat_classifier.params import Params
from inat_classifier.subset import CLASSES_FILE, SUBSET_DIR, balance_summary, make_subset


def main(params: Params) -> None:
    subset = make_subset(read_manifest(), params)
    for problem in subset.skipped:
        print(f"skipped: {problem}")
    summary = balance_summary(subset)
    with atomic_dir(SUBSET_DIR) as out:
        for split, frame in subset.splits.items():
            write_csv(out / f"{split}.csv", frame)
        write_json(out / CLASSES_FILE, subset.classes)
        write_json(out / "skipped.json", subset.skipped)
    write_json("metrics/subset.json", summary)
    print(f"classes: {', '.join(subset.classes)}")
    print(" ".join(f"{split}={summary[split]['images']}" for split in subset.splits))


if __name__ == "__main__":
    stage.run(main)
