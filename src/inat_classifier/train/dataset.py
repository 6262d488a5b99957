"""From ``data/subset`` to batches: decode and resize each image once, then stream it.

With ``data.format: files`` the stage decodes the photos once into uint8 pixels in memory when they
fit (``data.cache``), otherwise into an unlinked memory-mapped file that disappears with the
process, even after ``kill -9``; with ``tfrecord`` it streams the subset stage's shards (``records.py``).

Both formats serve the same order: the rows form blocks of ``data.shard_size`` (a shard's rows), an
epoch permutes the blocks, and each group of ``data.shuffle_shards`` blocks is shuffled as a whole,
so the shards stream with only one group in memory and the in-memory path gives the same batches.
Epoch ``e``'s order and augmentation depend only on ``(seed, e)``: the shuffles and the augmentation
are stateless, so a run resumed from a checkpoint sees exactly the batches an uninterrupted run
would have seen. Augmentation runs on whole uint8 batches and overlaps the training step through
``prefetch``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from .augment import Mixer, build_augmenter
from ..errors import DataError
from ..data.images import load_many
from ..layout import DISK_CACHE_DIR, SUBSET_DIR, split_file
from ..params import Augment, Data
from ..data.records import Records, open_split, parse

MEMORY_SHARE = 0.25  # decoded images stay in RAM up to this share of it (data.cache: auto)
# Every pass that keeps a batch's activations keeps to a budget, at these bytes per input pixel of
# each image. The eager training-mode forward pass of the BatchNormalization pass: 103 MB an image at
# 224 px (benchmarks/memory.py), within ACTIVATION_BUDGET. A compiled fine-tuning step of the whole
# base: 60-70 MB for each more image in a piece, BatchNormalization frozen or training, so 75 MB,
# within STEP_BUDGET; one whose BatchNormalization trains holds about 0.56 GB more whatever its piece
# (benchmarks/step_memory.py, two runs), left aside from its budget. So at 224 px the study's recipe
# (BatchNormalization frozen) takes whole batches of 32, a random base (training it) pieces of 16,
# each stage under 4 GB (docs/speed.md). The BatchNormalization pass takes batches of at most
# STATISTICS_MOST images.
FORWARD_BYTES_PER_PIXEL = 2_100
STEP_BYTES_PER_PIXEL = 1_500
ACTIVATION_BUDGET = 1.5 * 2**30
STEP_BUDGET = 2.5 * 2**30
TRAINING_BATCHNORM_BYTES = 0.6e9
STATISTICS_MOST = 256
DRAWS_PER_EPOCH = 2**20  # room in a seed counter for one epoch's batches
GROUP_DRAWS = 2**32  # room in a seed counter for the epochs of one group of blocks


@dataclass(frozen=True)
class Split:
    name: str
    pixels: np.ndarray | None  # N x S x S x 3 uint8, in memory or memory-mapped; None when streamed
    labels: np.ndarray  # N int32
    paths: list[str]
    skipped: list[str]
    records: Records | None = None  # the shards, with data.format: tfrecord

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Batches:
    """A dataset of (float32 images, labels) batches of ``rows`` rows in all and the hook that selects its epoch."""

    dataset: tf.data.Dataset
    set_epoch: Callable[[int], None]
    rows: int
    batch_size: int

    @classmethod
    def of(cls, data: tf.data.Dataset, order: "Order", batch_size: int) -> "Batches":
        """Prefetched, with its length declared: Keras then knows an epoch's steps before the first ends."""
        data = data.apply(tf.data.experimental.assert_cardinality(-(-order.count // batch_size)))
        return cls(data.prefetch(tf.data.AUTOTUNE), order.epoch.assign, order.count, batch_size)

    def one_hot(self, num_classes: int) -> "Batches":
        """The same batches with one-hot labels: validation beside training batches that ``mix``."""
        return replace(self, dataset=self.dataset.map(lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), num_classes))))

    def steps(self, replicas: int = 1) -> int:
        """Batches in an epoch as :meth:`for_replicas` serves them."""
        tail = self.rows % self.batch_size
        return self.rows // self.batch_size + (tail >= replicas)

    def for_replicas(self, replicas: int) -> tf.data.Dataset:
        """The batches with a row for every replica: a last batch too small for that joins the one before.

        tf.distribute splits each batch among the replicas. One handed no rows fails in
        BatchNormalization where TensorFlow uses oneDNN (most current CPUs) and computes NaN
        statistics and gradients elsewhere. Merging rather than padding counts every row once, so
        validation metrics and predictions stay exact, and a single device gets the batches unchanged.
        """
        tail = self.rows % self.batch_size
        if replicas == 1 or tail == 0 or tail >= replicas:
            return self.dataset
        if self.rows < replicas:
            raise DataError(f"{self.rows} images cannot give each of {replicas} replicas one (train.distribute)")
        cut, merged = self.rows - tail - self.batch_size, self.batch_size + tail  # cut: rows in whole batches
        data = self.dataset.unbatch().enumerate().group_by_window(
            key_func=lambda i, _: tf.cast(i >= cut, tf.int64),
            reduce_func=lambda _, window: window.map(lambda i, row: row).batch(merged),
            window_size_func=lambda last: tf.where(last == 1, tf.constant(merged, tf.int64), self.batch_size),
        )
        return data.apply(tf.data.experimental.assert_cardinality(self.steps(replicas))).prefetch(tf.data.AUTOTUNE)


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


def load_split(name: str, data: Data, subset_dir: Path = SUBSET_DIR) -> Split:
    path = split_file(name, subset_dir)
    if not path.is_file():
        raise DataError(f"{path}: missing; run the subset stage first (dvc repro subset)")
    frame = pd.read_csv(path, dtype={"path": str, "label": np.int32, "class_name": str}, keep_default_na=False)
    labels, paths = frame["label"].to_numpy(np.int32), frame["path"].tolist()
    if data.format == "tfrecord":  # decoded by the subset stage
        records = open_split(Path(subset_dir), name, len(frame), data.image_size, data.shard_size)
        return Split(name=name, pixels=None, labels=labels, paths=paths, skipped=[], records=records)
    size, cache = data.image_size, data.cache
    on_disk = cache == "disk" or (cache == "auto" and not fits_in_memory(len(frame), size))
    pixels, kept, problems = load_many(
        paths,
        size,
        data.max_pixels,
        desc=f"decoding {name}" + (" (to disk)" if on_disk else ""),
        into=_disk_array(len(frame), size) if on_disk else None,
    )
    for problem in problems:
        print(f"skipped: {problem}")
    if not kept:
        raise DataError(f"{path}: no readable images")
    return Split(name=name, pixels=pixels, labels=labels[kept], paths=[paths[i] for i in kept], skipped=problems)


@dataclass(frozen=True)
class Order:
    """How an epoch orders ``count`` rows (see the module docstring); ``epoch`` is read when iterated."""

    count: int
    block: int
    blocks_per_group: int
    seed: int
    shuffle: bool
    epoch: tf.Variable

    @classmethod
    def of(cls, count: int, data: Data, seed: int, shuffle: bool) -> "Order":
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        return cls(count, data.shard_size, data.shuffle_shards, seed, shuffle, epoch)

    def groups(self) -> tf.data.Dataset:
        """(group number, its block numbers padded with -1) for the current epoch."""
        blocks, per = -(-self.count // self.block), self.blocks_per_group
        groups = -(-blocks // per)

        def arrange(_: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            order = tf.range(blocks, dtype=tf.int64)
            if self.shuffle:  # a key of its own: seeds are < 2**31
                key = tf.stack([tf.constant(self.seed + 2**31, tf.int64), self.epoch])
                order = tf.random.experimental.stateless_shuffle(order, seed=key)
            padded = tf.concat([order, -tf.ones([groups * per - blocks], tf.int64)], 0)
            return tf.range(groups, dtype=tf.int64), tf.reshape(padded, [groups, per])

        return tf.data.Dataset.from_tensors(0).map(arrange).unbatch()

    def rows(self, group: tf.Tensor, blocks: tf.Tensor) -> tf.Tensor:
        """The rows of ``blocks`` in the order the epoch serves them.

        The group's rows in ascending order, shuffled with the key ``(seed, epoch + group * 2**32)``:
        a set that fits in one group is shuffled by ``(seed, epoch)`` as a whole.
        """
        blocks = tf.sort(tf.boolean_mask(blocks, blocks >= 0))
        rows = tf.ragged.range(blocks * self.block, tf.minimum((blocks + 1) * self.block, self.count)).flat_values
        if not self.shuffle:
            return rows
        key = tf.stack([tf.constant(self.seed, tf.int64), self.epoch + group * GROUP_DRAWS])
        return tf.random.experimental.stateless_shuffle(rows, seed=key)

    def indices(self) -> tf.data.Dataset:
        """The epoch's row numbers, one element each."""
        return self.groups().map(self.rows).unbatch()


def epoch_batches(
    rows: Callable[[int, np.ndarray], np.ndarray],
    labels: np.ndarray,
    shape: tuple[int, ...],
    dtype: tf.DType,
    batch_size: int,
    order: Order,
) -> tf.data.Dataset:
    """(rows, labels) batches in ``order``; ``rows(epoch, indices)`` reads them from numpy."""
    label_tensor = tf.constant(labels)

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        read = tf.numpy_function(lambda e, i: rows(int(e), i), [order.epoch.read_value(), indices], dtype, stateful=False)
        read.set_shape([None, *shape])
        return read, tf.gather(label_tensor, indices)

    return order.indices().batch(batch_size).map(gather).with_options(_options())


def record_batches(records: Records, batch_size: int, order: Order) -> tf.data.Dataset:
    """The shards' (uint8 images, labels) batches in ``order``, holding one group of shards in memory.

    The group's shards are read in parallel (their records arrive interleaved), then put in the
    group's order by their row numbers.
    """
    files = tf.constant(records.files)

    def group(number: tf.Tensor, blocks: tf.Tensor) -> tf.data.Dataset:
        wanted = order.rows(number, blocks)
        read = tf.data.TFRecordDataset(
            tf.gather(files, tf.boolean_mask(blocks, blocks >= 0)), num_parallel_reads=order.blocks_per_group
        )

        def arrange(indices: tf.Tensor, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            by_row = tf.argsort(indices)
            source = tf.gather(by_row, tf.searchsorted(tf.gather(indices, by_row), wanted))
            return tf.gather(images, source), tf.gather(labels, source)

        whole = read.batch(order.blocks_per_group * order.block)
        return whole.map(lambda serialized: arrange(*parse(serialized, records.image_size))).unbatch()

    return order.groups().flat_map(group).batch(batch_size).with_options(_options())


def _options() -> tf.data.Options:
    """Every pipeline's options, set where it starts (datasets built on it inherit them)."""
    return _threading().merge(_sharding())


def _threading() -> tf.data.Options:
    """Without a GPU the model needs every core: the pipeline keeps to one thread, untuned.

    On 2 cores at 224 px one thread augments over twenty times faster than the model trains (see
    benchmarks/speed.py); more threads would only compete with the model. Autotuning has nothing to
    tune on one thread, and its thread made every third epoch or so start 3-5 s late: closing an
    epoch's iterator waited for the tuner to wake (docs/speed.md). With a GPU the pipeline may use
    all the CPU's cores, tuned, to keep the accelerator fed.
    """
    options = tf.data.Options()
    if not has_gpu():
        options.threading.private_threadpool_size = 1
        options.threading.max_intra_op_parallelism = 1
        options.autotune.enabled = False
    return options


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def _sharding() -> tf.data.Options:
    """On several workers each takes its share of every batch, not a share of the batches.

    tf.distribute splits each global batch into one piece per replica; sharding by data keeps each
    worker's pieces. Every worker runs this whole pipeline (cheap next to the model), the replicas
    together train on exactly the batches of a single-device run, and every worker runs the same
    number of steps, without which the others would wait for it forever. Sharding by file, the
    default's first choice, would give workers whole shards, unequal in number.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def batches(
    split: Split,
    data: Data,
    seed: int,
    *,
    shuffle: bool,
    augment: Augment | None = None,
    mix: Mixer | None = None,
    batch_size: int | None = None,
) -> Batches:
    """Batches of ``split``; shuffled and augmented per epoch for training, plain and ordered otherwise.

    ``augment`` is the params' augment section for training batches; without it the images are plain.
    ``mix`` (MixUp, CutMix) blends the augmented batch and gives one-hot label shares.
    """
    batch_size = batch_size or data.batch_size
    order = Order.of(len(split), data, seed, shuffle)
    if split.records is not None:
        stream = record_batches(split.records, batch_size, order)
    else:
        pixels = split.pixels
        stream = epoch_batches(lambda _, rows: pixels[rows], split.labels, pixels.shape[1:], tf.uint8, batch_size, order)
    augmenter = build_augmenter(augment) if augment is not None else None
    if augmenter is None and mix is None:
        stream = stream.map(lambda x, y: (tf.cast(x, tf.float32), y))
    else:  # batch i of epoch e draws from (seed, e, i) alone
        key, epoch = tf.constant(seed, tf.int64), order.epoch

        def randomise(i: tf.Tensor, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            draws = tf.stack([key, epoch * DRAWS_PER_EPOCH + i])
            images = augmenter(images, draws) if augmenter is not None else tf.cast(images, tf.float32)
            return mix(images, labels, draws) if mix is not None else (images, labels)

        stream = stream.enumerate().map(
            lambda i, batch: randomise(i, *batch),
            # Stateless, so parallel batches stay deterministic (GPU). On one thread a parallel map would
            # only be rewritten to a plain one, which logs an error-level line (TensorFlow 2.21).
            num_parallel_calls=tf.data.AUTOTUNE if has_gpu() else None,
        )
    return Batches.of(stream, order, batch_size)


def images_within_budget(image_size: int, share: float = 1.0, bytes_per_pixel: int = FORWARD_BYTES_PER_PIXEL,
                         budget: float | None = None) -> int:
    """Images whose activations fit ``budget`` (ACTIVATION_BUDGET); ``share``: the part of the network that keeps them.

    256 images at 224 px would take about 26 GB; a step keeps the activations only of the layers it trains.
    """
    budget = ACTIVATION_BUDGET if budget is None else budget
    return max(1, int(budget // (bytes_per_pixel * image_size**2 * max(share, 1e-3))))


def statistics_batch_size(image_size: int) -> int:
    """Images per batch of the BatchNormalization pass: large batches keep the eager per-call overhead small."""
    return min(STATISTICS_MOST, images_within_budget(image_size))


def images_only(split: Split, data: Data, seed: int) -> tf.data.Dataset:
    """Float32 image batches of the whole split in a shuffled order (epoch 0), for statistics."""
    size = statistics_batch_size(data.image_size)
    return batches(split, data, seed, shuffle=True, batch_size=size).dataset.map(lambda x, _: x)
