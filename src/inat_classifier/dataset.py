"""From ``data/subset/*.csv`` to batches: decode and resize each image once, then stream it.

Decoded uint8 pixels live in memory when they fit (``data.cache``), otherwise in an unlinked
memory-mapped file that disappears with the process, even after ``kill -9``. Epoch ``e``'s order
and augmentation depend only on ``(seed, e)``: the shuffle and the augmentation are stateless, so a
run resumed from a checkpoint sees exactly the batches an uninterrupted run would have seen.
Augmentation runs on whole uint8 batches and overlaps the training step through ``prefetch``.
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
DRAWS_PER_EPOCH = 2**20  # room in a seed counter for one epoch's batches


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
    return data.with_options(_threading()), epoch


def _threading() -> tf.data.Options:
    """Without a GPU the model needs every core: the pipeline keeps to one thread.

    On 2 cores at 224 px one thread augments about ten times faster than the model trains (see
    benchmarks/speed.py); more threads would only compete with the model. With a GPU the pipeline
    may use all the CPU's cores to keep the accelerator fed.
    """
    options = tf.data.Options()
    if not tf.config.list_physical_devices("GPU"):
        options.threading.private_threadpool_size = 1
        options.threading.max_intra_op_parallelism = 1
    return options


def batches(split: Split, params: Params, *, shuffle: bool, augment: bool) -> Batches:
    """Batches of ``split``; shuffled and augmented per epoch for training, plain and ordered otherwise."""
    pixels = split.pixels
    data, epoch = epoch_batches(
        lambda _, rows: pixels[rows], split.labels, pixels.shape[1:], tf.uint8,
        params.data.batch_size, params.seed, shuffle,
    )
    augmenter = build_augmenter(params.augment) if augment else None
    if augmenter is None:
        data = data.map(lambda x, y: (tf.cast(x, tf.float32), y))
    else:  # batch i of epoch e draws from (seed, e, i) alone
        seed = tf.constant(params.seed, tf.int64)
        data = data.enumerate().map(
            lambda i, batch: (augmenter(batch[0], tf.stack([seed, epoch * DRAWS_PER_EPOCH + i])), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,  # stateless, so parallel batches stay deterministic (GPU)
        )
    return Batches(data.prefetch(tf.data.AUTOTUNE), epoch.assign)
