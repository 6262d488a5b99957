"""From ``data/subset/*.csv`` to batches: decode and resize each image once, then stream it.

Decoded uint8 pixels live in memory when they fit (``data.cache``), otherwise in an unlinked
memory-mapped file that disappears with the process, even after ``kill -9``. Epoch ``e``'s order
and augmentation depend only on ``(seed, e)``: the shuffle is stateless and the augmentation layers
are reseeded at each epoch start, so a run resumed from a checkpoint sees exactly the batches an
uninterrupted run would have seen. Augmentation runs on whole batches in one ordered map (parallel
maps would race on the layers' seed state) and overlaps the training step through ``prefetch``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
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

MEMORY_SHARE = 0.25  # decoded images stay in RAM up to this share of it (data.cache: auto)
DISK_CACHE_DIR = Path("data/cache")
_DRAWS_PER_EPOCH = 2**20  # room in each augmentation layer's seed counter for one epoch's batches


@dataclass(frozen=True)
class Split:
    name: str
    pixels: np.ndarray  # N x S x S x 3 uint8, in memory or memory-mapped
    labels: np.ndarray  # N int32
    paths: list[str]
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Batches:
    """A dataset of (float32 images, labels) batches and the hook that selects its epoch."""

    dataset: tf.data.Dataset
    set_epoch: Callable[[int], None]
    steps: int


def read_classes(subset_dir: Path = SUBSET_DIR) -> list[str]:
    path = Path(subset_dir) / CLASSES_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing; run the subset stage first (dvc repro subset)")
    return json.loads(path.read_text())


def fits_in_memory(images: int, size: int) -> bool:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return images * size * size * 3 <= MEMORY_SHARE * physical


def _disk_array(images: int, size: int) -> np.ndarray:
    """A memory-mapped array whose file is already unlinked: nothing to clean up, ever."""
    DISK_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".npy", dir=DISK_CACHE_DIR)
    os.close(handle)
    try:
        return np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8, shape=(images, size, size, 3))
    finally:
        os.unlink(name)


def load_split(name: str, params: Params, subset_dir: Path = SUBSET_DIR) -> Split:
    path = Path(subset_dir) / f"{name}.csv"
    if not path.is_file():
        raise DataError(f"{path}: missing; run the subset stage first (dvc repro subset)")
    frame = pd.read_csv(path, dtype={"path": str, "label": np.int32, "class_name": str}, keep_default_na=False)
    size, cache = params.data.image_size, params.data.cache
    on_disk = cache == "disk" or (cache == "auto" and not fits_in_memory(len(frame), size))
    pixels, kept, problems = load_many(
        frame["path"].tolist(),
        size,
        params.download.max_pixels,
        desc=f"decoding {name}" + (" (to disk)" if on_disk else ""),
        into=_disk_array(len(frame), size) if on_disk else None,
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


def epoch_batches(
    rows: Callable[[int, np.ndarray], np.ndarray],
    labels: np.ndarray,
    shape: tuple[int, ...],
    dtype: tf.DType,
    batch_size: int,
    seed: int,
    shuffle: bool,
) -> tuple[tf.data.Dataset, tf.Variable]:
    """(rows, labels) batches over ``len(labels)`` items; ``rows(epoch, indices)`` reads them from numpy.

    Returns the dataset and the variable holding the epoch it serves: a stateless shuffle keyed by
    ``(seed, epoch)`` orders the items, so any epoch can be replayed on its own.
    """
    count, label_tensor = len(labels), tf.constant(labels)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    def order(_: tf.Tensor) -> tf.Tensor:
        indices = tf.range(count, dtype=tf.int64)
        if not shuffle:
            return indices
        return tf.random.experimental.stateless_shuffle(indices, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        read = tf.numpy_function(lambda e, i: rows(int(e), i), [epoch.read_value(), indices], dtype, stateful=False)
        read.set_shape([None, *shape])
        return read, tf.gather(label_tensor, indices)

    data = tf.data.Dataset.from_tensors(0).map(order).unbatch().batch(batch_size).map(gather)
    return data, epoch


def batches(split: Split, params: Params, *, shuffle: bool, augment: bool) -> Batches:
    """Batches of ``split``; shuffled and augmented per epoch for training, plain and ordered otherwise."""
    pixels = split.pixels
    data, epoch = epoch_batches(
        lambda _, rows: pixels[rows], split.labels, pixels.shape[1:], tf.uint8,
        params.data.batch_size, params.seed, shuffle,
    )
    data = data.map(lambda x, y: (tf.cast(x, tf.float32), y))
    augmenter = build_augmenter(params.augment, params.seed) if augment else None
    if augmenter is not None:
        data = data.map(lambda x, y: (augmenter(x, training=True), y))
    reseed = epoch_seeder(augmenter.non_trainable_variables if augmenter else [])

    def set_epoch(value: int) -> None:
        epoch.assign(value)
        reseed(value)

    return Batches(data.prefetch(tf.data.AUTOTUNE), set_epoch, steps_of(len(split), params.data.batch_size))


def epoch_seeder(variables: list) -> Callable[[int], None]:
    """Sets the random layers' seed counters among ``variables`` to a function of the epoch.

    Keras' random layers (augmentation, dropout) draw from a counter that runs on over the whole
    fit; keyed by epoch instead, any epoch's draws can be replayed on their own.
    """
    states = [v for v in variables if "seed_generator_state" in v.path]
    seeds = [int(state.numpy()[0]) for state in states]

    def reseed(epoch: int) -> None:
        for state, seed in zip(states, seeds):
            state.assign(np.array([seed, epoch * _DRAWS_PER_EPOCH], dtype=state.dtype))

    return reseed


def steps_of(count: int, batch_size: int) -> int:
    return -(-count // batch_size)
