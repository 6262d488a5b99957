"""From ``data/subset/*.csv`` to batches: decode and resize each image once, then stream from memory.

Augmentation runs inside tf.data on whole batches in one ordered map, so its random state advances
in the same order on every run (parallel maps would race on the layers' seed state) and overlaps the
training step through ``prefetch``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from .augment import build_augmenter
from .errors import DataError
from .images import load_many
from .params import Params
from .subset import CLASSES_FILE, SUBSET_DIR


@dataclass(frozen=True)
class Split:
    name: str
    pixels: np.ndarray  # N x S x S x 3 uint8
    labels: np.ndarray  # N int32
    paths: list[str]
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def read_classes(subset_dir: Path = SUBSET_DIR) -> list[str]:
    path = Path(subset_dir) / CLASSES_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing; run the subset stage first (dvc repro subset)")
    return json.loads(path.read_text())


def load_split(name: str, params: Params, subset_dir: Path = SUBSET_DIR) -> Split:
    path = Path(subset_dir) / f"{name}.csv"
    if not path.is_file():
        raise DataError(f"{path}: missing; run the subset stage first (dvc repro subset)")
    frame = pd.read_csv(path, dtype={"path": str, "label": np.int32, "class_name": str}, keep_default_na=False)
    pixels, kept, problems = load_many(
        frame["path"].tolist(), params.data.image_size, params.download.max_pixels, desc=f"decoding {name}"
    )
    for problem in problems:
        print(f"skipped: {problem}")
    if not kept:
        raise DataError(f"{path}: no readable images")
    return Split(
        name=name,
        pixels=pixels,
        labels=frame["label"].to_numpy(np.int32)[kept],
        paths=[frame["path"].iloc[i] for i in kept],
        skipped=problems,
    )


def batches(split: Split, params: Params, training: bool) -> tf.data.Dataset:
    """Shuffled and augmented batches for training; plain, ordered batches otherwise."""
    data = tf.data.Dataset.from_tensor_slices((split.pixels, split.labels))
    if training:
        data = data.shuffle(len(split), seed=params.seed, reshuffle_each_iteration=True)
    data = data.batch(params.data.batch_size)
    data = data.map(lambda x, y: (tf.cast(x, tf.float32), y))
    augmenter = build_augmenter(params.augment, params.seed) if training else None
    if augmenter is not None:
        data = data.map(lambda x, y: (augmenter(x, training=True), y))
    return data.prefetch(tf.data.AUTOTUNE)
