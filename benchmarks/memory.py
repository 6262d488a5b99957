"""Peak resident memory of every stage at the study's scale, printed as JSON.

The study trained on about 520 photos at 224 px; the offline default runs at 48 px, where no stage
comes near the memory of a small machine. This generates seed-scale data (the sample source with
photo-sized pictures: 4 classes, about 440 training and 80 validation photos), then runs each stage
at 224 px, once per `model.weights` setting (`none`, and a weights file this script saves: the same
path as ImageNet's, offline) and per `data.format`, with few epochs (memory does not grow with
them), and reports each stage's own peak RSS and wall time.

    python benchmarks/memory.py [--formats files tfrecord] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from pipeline import copy_repo
from reproducibility import run_stage

SEED_SCALE = [
    "data.image_size=224",
    "download.sample.classes=5",  # the last is test-only: 4 classes in both years
    "download.sample.train_images=150",
    "download.sample.test_images=50",
    "download.sample.min_side=320",
    "download.sample.max_side=500",
    "train_head.epochs=2",
    "finetune.epochs=1",
]
STAGES = ("download", "subset", "train_head", "finetune", "evaluate")


def save_weights_file(path: Path) -> None:
    """An EfficientNetB0 base's weights, standing in for ImageNet's (which need the network)."""
    import keras

    path.parent.mkdir(parents=True, exist_ok=True)
    keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg").save_weights(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--formats", nargs="+", choices=("files", "tfrecord"), default=["files", "tfrecord"])
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    runs = []
    with tempfile.TemporaryDirectory(prefix="memory.") as scratch:
        weights = Path(scratch) / "weights" / "base.weights.h5"
        save_weights_file(weights)
        for data_format in args.formats:
            for setting in ("none", str(weights)):
                root = Path(scratch) / f"{data_format}-{'file' if setting != 'none' else 'none'}"
                copy_repo(root, [*SEED_SCALE, f"data.format={data_format}", f"model.weights={setting}", *args.overrides])
                run = {"format": data_format, "weights": "none" if setting == "none" else "file"}
                for stage in STAGES:
                    seconds, peak = run_stage(root, stage, env)
                    run[stage] = {"peak_mb": peak, "seconds": seconds}
                run["test_images"] = json.loads((root / "metrics" / "evaluate.json").read_text())["test"]["images"]
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    print(json.dumps({"settings": SEED_SCALE + args.overrides, "runs": runs,
                      "peak_mb": max(run[stage]["peak_mb"] for run in runs for stage in STAGES)}, indent=2))


if __name__ == "__main__":
    main()
