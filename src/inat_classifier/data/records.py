"""Sharded TFRecords of decoded, resized images, for sets that do not fit in memory (``data.format: tfrecord``).

The subset stage writes each split in its row order: shard ``k`` holds rows ``k*S .. (k+1)*S - 1``
(``S = data.shard_size``), each record its row index, label and raw uint8 pixels, so training never
decodes a photo again. Every path goes through ``tf.io.gfile``: the shards may live in a local folder
(by default inside ``data/subset``, tracked by DVC) or on any filesystem TensorFlow reads (``gs://``;
``s3://`` with tensorflow-io). An index beside the split CSVs lists them, so DVC sees each rewrite.
Each shard is written to a temporary name and renamed, so a killed run never leaves half a shard.
A shard's name ends with a digest of its content, so experiments sharing one ``tfrecord_dir`` never
overwrite each other's shards; the index lists each shard's size, checked before training.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from ..errors import DataError
from .images import load_many

INDEX_FILE = "tfrecord.json"
DEFAULT_DIR = "tfrecord"  # inside the subset directory


@dataclass(frozen=True)
class Records:
    """One split's shards: ``files[k]`` holds rows ``k * shard_size`` onwards."""

    files: list[str]
    count: int
    shard_size: int
    image_size: int


def check_location(directory: str) -> None:
    """A filesystem TensorFlow lacks fails at once with a hint, not mid-run with a traceback."""
    scheme = directory.split("://", 1)[0] if "://" in directory else ""
    if scheme not in tf.io.gfile.get_registered_schemes():
        raise DataError(f"data.tfrecord_dir: {directory}: this TensorFlow cannot open {scheme}:// paths (it has "
                        f"{', '.join(s + '://' for s in tf.io.gfile.get_registered_schemes() if s)}); s3:// needs tensorflow-io")


def shard_name(split: str, k: int, shards: int, first_index: int, labels: Sequence[int], pixels: np.ndarray) -> str:
    """``<split>-<k>-of-<n>-<digest>.tfrecord``: the digest covers everything the shard's records hold."""
    digest = hashlib.sha256(np.asarray([first_index, *labels], dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    return f"{split}-{k:05d}-of-{shards:05d}-{digest.hexdigest()[:16]}.tfrecord"


def _example(index: int, label: int, pixels: np.ndarray) -> bytes:
    feature = {
        "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pixels.tobytes()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path: str, first_index: int, labels: Sequence[int], pixels: np.ndarray) -> None:
    """Write one shard via a temporary name, so readers see a whole shard or none."""
    tmp = f"{path}.tmp"
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.TFRecordWriter(tmp) as writer:
        for offset, (label, image) in enumerate(zip(labels, pixels)):
            writer.write(_example(first_index + offset, int(label), image))
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_split(
    directory: str, split: str, paths: Sequence[str], labels: Sequence[int], image_size: int, shard_size: int,
    max_pixels: int,
) -> list[str]:
    """Decode ``paths`` a shard at a time (memory holds one shard) and write them; return the shard paths."""
    check_location(directory)
    shards, names = max(1, math.ceil(len(paths) / shard_size)), []
    for k in tqdm(range(shards), desc=f"writing {split} shards", unit="shard", mininterval=1.0):
        rows = slice(k * shard_size, (k + 1) * shard_size)
        pixels, kept, problems = load_many(list(paths[rows]), image_size, max_pixels, desc=None)
        if problems:  # subset decoded every photo moments ago: a file changed under us
            raise DataError(f"{problems[0]} (it decoded earlier in this stage; rerun dvc repro subset)")
        names.append(shard_name(split, k, shards, k * shard_size, list(labels[rows]), pixels))
        write_shard(f"{directory}/{names[-1]}", k * shard_size, list(labels[rows]), pixels)
    return names


def write_index(subset_dir: Path, shards: dict[str, list[str]], directory: str, counts: dict[str, int],
                image_size: int, shard_size: int) -> None:
    """The list DVC tracks; ``directory`` relative to the subset folder when it lies inside it."""
    location = _location(subset_dir, directory)
    sizes = {split: [tf.io.gfile.stat(f"{location}/{name}").length for name in files] for split, files in shards.items()}
    index = {"directory": directory, "image_size": image_size, "shard_size": shard_size,
             "splits": {split: {"count": counts[split], "files": files, "bytes": sizes[split]}
                        for split, files in shards.items()}}
    (Path(subset_dir) / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def open_split(subset_dir: Path, split: str, count: int, image_size: int, shard_size: int) -> Records:
    """The split's shards, checked against the CSV and the params before any training starts."""
    path = Path(subset_dir) / INDEX_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing; data.format is tfrecord: rerun the subset stage (dvc repro subset)")
    index = json.loads(path.read_text())
    entry = index["splits"].get(split)
    if entry is None or entry["count"] != count:
        raise DataError(f"{path}: does not match {split}.csv; rerun the subset stage (dvc repro subset)")
    for key, wanted in (("image_size", image_size), ("shard_size", shard_size)):
        if index[key] != wanted:
            raise DataError(f"{path}: shards have {key} {index[key]}, params say data.{key} {wanted}; "
                            "rerun the subset stage (dvc repro subset)")
    directory = _location(subset_dir, index["directory"])
    check_location(directory)
    files = [f"{directory}/{name}" for name in entry["files"]]
    missing = [name for name in files if not tf.io.gfile.exists(name)]
    if missing:
        raise DataError(f"{missing[0]}: shard missing; rerun the subset stage (dvc repro subset)")
    for name, size in zip(files, entry.get("bytes") or []):
        if tf.io.gfile.stat(name).length != size:
            raise DataError(f"{name}: {tf.io.gfile.stat(name).length} bytes, the index says {size}; "
                            "rerun the subset stage (dvc repro subset)")
    return Records(files, count, shard_size, image_size)


def _location(subset_dir: Path, directory: str) -> str:
    """Where the shards are: ``directory``, relative to the subset folder unless a URL or absolute."""
    if "://" not in directory and not Path(directory).is_absolute():
        return str(Path(subset_dir) / directory)
    return directory


def parse(records: tf.Tensor, image_size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(indices, uint8 images, labels) of a batch of serialized records."""
    parsed = tf.io.parse_example(records, {
        "index": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "image": tf.io.FixedLenFeature([], tf.string),
    })
    images = tf.reshape(tf.io.decode_raw(parsed["image"], tf.uint8), [-1, image_size, image_size, 3])
    return parsed["index"], images, tf.cast(parsed["label"], tf.int32)
