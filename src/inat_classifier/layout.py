"""Where the pipeline keeps its files: the one place that names them (dvc.yaml repeats them for DVC).

Paths are relative to the repository root, where DVC runs every stage; ``tests/test_dvc_yaml.py``
checks that dvc.yaml's outputs name the same places.
"""

from __future__ import annotations

from pathlib import Path

# The subset's splits in the order every report lists them; a source provides only the two years.
SPLITS = ("train", "val", "test")
SOURCE_SPLITS = ("train", "test")

RAW_DIR = Path("data/raw")  # the download stage's photos and manifest
MANIFEST_FILE = "manifest.csv"  # in RAW_DIR (or a test's own folder)
RAW_REPORT_FILE = "report.json"
# Downloads and extractions that must survive DVC deleting data/raw before the stage reruns:
# finished files here are never fetched again. Safe to delete (everything is fetched anew).
DOWNLOAD_DIR = Path("data/downloads")

SUBSET_DIR = Path("data/subset")  # the subset stage's <split>.csv, classes.json, shards
CLASSES_FILE = "classes.json"  # in SUBSET_DIR
SUBSET_METRICS = Path("metrics/subset.json")
DISK_CACHE_DIR = Path("data/cache")  # decoded images that do not fit in memory (unlinked at once)

HEAD_MODEL = Path("models/head.keras")  # train_head's output, finetune's input
MODEL = Path("models/model.keras")  # the fine-tuned classifier; its class names beside it
LIVE_DIR = Path("dvclive")  # per-stage training curves
CHECKPOINT_DIR = Path("checkpoints")  # not a DVC output: it must survive DVC cleaning a stage's outputs

EVALUATE_METRICS = Path("metrics/evaluate.json")  # the evaluate stage's scores; metrics_file() its tables

EXPORT_DIR = Path("models/export")
EXPORT_METRICS = Path("metrics/export.json")


def split_file(split: str, subset_dir: Path = SUBSET_DIR) -> Path:
    """``data/subset/<split>.csv``: one row per image of the split (path, label, class_name)."""
    return Path(subset_dir) / f"{split}.csv"


def metrics_file(kind: str, split: str) -> Path:
    """``metrics/<kind>_<split>.csv``: the evaluate stage's per_class, confusion, recall, predictions and
    reliability tables."""
    return Path("metrics") / f"{kind}_{split}.csv"
