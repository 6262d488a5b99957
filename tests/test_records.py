"""data.format: tfrecord: shards written by subset, streamed in the same order as the in-memory path."""

import json
import re
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import REPO, write_image
from inat_classifier.train.dataset import Order, Split, batches, load_split
from inat_classifier.errors import DataError
from inat_classifier.evaluate.evaluation import split_metrics
from inat_classifier.data.images import load_many
from inat_classifier.params import parse_params
from inat_classifier.data.records import write_index, write_shard, write_split
from inat_classifier.train.training import compile_model, fit, make_deterministic

# 23 images in blocks of 4 (6 shards, the last short), shuffled 2 blocks at a time: 3 groups
PARAMS = parse_params({"data": {"image_size": 32, "batch_size": 5, "shard_size": 4, "shuffle_shards": 2}})
COUNT = 23


def pixels_and_labels(count=COUNT, size=32):
    rng = np.random.default_rng(1)
    labels = (np.arange(count) % 3).astype(np.int32)
    pixels = rng.integers(0, 255, (count, size, size, 3), dtype=np.uint8)
    pixels[..., 0] = (labels * 100)[:, None, None]  # learnable: the red channel tells the class
    return pixels, labels


def sharded(tmp_path, directory: str, params=PARAMS) -> tuple[Split, Split]:
    """The same images in memory and as shards in ``directory`` (any tf.io.gfile location)."""
    pixels, labels = pixels_and_labels()
    block, names = params.data.shard_size, []
    for k, start in enumerate(range(0, COUNT, block)):
        names.append(f"train-{k:05d}.tfrecord")
        write_shard(f"{directory}/{names[-1]}", start, labels[start : start + block], pixels[start : start + block])
    write_index(tmp_path, {"train": names}, directory, {"train": COUNT}, 32, block)
    pd.DataFrame({"path": [f"{i}.png" for i in range(COUNT)], "label": labels, "class_name": "x"}).to_csv(
        tmp_path / "train.csv", index=False
    )
    streamed = load_split("train", params.data.model_copy(update={"format": "tfrecord"}), tmp_path)
    return Split("train", pixels, labels, [], []), streamed


def collect(data, epoch):
    data.set_epoch(epoch)
    return [(x.numpy(), y.numpy()) for x, y in data.dataset]


def rows_of(order: Order, epoch: int) -> np.ndarray:
    order.epoch.assign(epoch)
    return np.array([int(row) for row in order.indices()])


def test_an_epoch_shuffles_groups_of_whole_blocks_and_replays_by_epoch():
    order = Order.of(COUNT, PARAMS.data, seed=3, shuffle=True)
    first, second = rows_of(order, 0), rows_of(order, 1)
    assert sorted(first) == list(range(COUNT)) and sorted(second) == list(range(COUNT))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(rows_of(Order.of(COUNT, PARAMS.data, 3, True), 1), second)
    order.epoch.assign(0)
    groups = [blocks.numpy() for _, blocks in order.groups()]
    assert len(groups) == 3 and sorted(b for group in groups for b in group) == list(range(6))
    position = 0
    for group in groups:  # the epoch serves each group's two blocks, whole, before the next group
        members = {row for block in group for row in range(4 * block, min(4 * block + 4, COUNT))}
        assert set(first[position : position + len(members)]) == members
        position += len(members)
    assert rows_of(Order.of(COUNT, PARAMS.data, 3, shuffle=False), 5).tolist() == list(range(COUNT))


def test_a_set_within_one_group_is_shuffled_as_a_whole():
    data = PARAMS.data.model_copy(update={"shard_size": 100})
    order = Order.of(COUNT, data, seed=3, shuffle=True)
    whole = tf.random.experimental.stateless_shuffle(tf.range(COUNT, dtype=tf.int64), seed=[3, 2]).numpy()
    np.testing.assert_array_equal(rows_of(order, 2), whole)


@pytest.mark.parametrize("where", ["local", "ram"])
def test_shards_stream_the_very_batches_of_the_in_memory_path(tmp_path, where):
    directory = str(tmp_path / "shards") if where == "local" else f"ram://{tmp_path.name}/shards"
    memory, streamed = sharded(tmp_path, directory)
    assert streamed.pixels is None and len(streamed) == COUNT
    for shuffle, augment in ((True, True), (False, False)):
        augmenting = PARAMS.augment if augment else None
        expected = batches(memory, PARAMS.data, PARAMS.seed, shuffle=shuffle, augment=augmenting)
        got = batches(streamed, PARAMS.data, PARAMS.seed, shuffle=shuffle, augment=augmenting)
        for epoch in (0, 1):
            pairs = list(zip(collect(expected, epoch), collect(got, epoch), strict=True))
            assert [len(y) for _, (_, y) in pairs] == [5, 5, 5, 5, 3]
            for (x1, y1), (x2, y2) in pairs:
                np.testing.assert_array_equal(x1, x2)
                np.testing.assert_array_equal(y1, y2)


def test_training_on_shards_gives_the_same_metrics_as_training_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    memory, streamed = sharded(tmp_path, str(tmp_path / "shards"))
    results = []
    for run, split in enumerate((memory, streamed)):
        make_deterministic(PARAMS.seed)
        layers = keras.layers
        model = keras.Sequential([
            keras.Input((32, 32, 3)), layers.Rescaling(1 / 255), layers.Conv2D(4, 3), layers.GlobalAveragePooling2D(),
            layers.Dropout(0.2), layers.Dense(3, activation="softmax"),
        ])
        compile_model(model, 1e-2)
        train, val = batches(split, PARAMS.data, PARAMS.seed, shuffle=True, augment=PARAMS.augment), batches(split, PARAMS.data, PARAMS.seed, shuffle=False)
        monkeypatch.setattr("inat_classifier.train.training.CHECKPOINT_DIR", tmp_path / f"checkpoints{run}")
        monkeypatch.setattr("inat_classifier.train.training.LIVE_DIR", tmp_path / f"dvclive{run}")
        fit(model, train, val, epochs=3, stage="train", stamp="same")
        probs = model.predict(batches(split, PARAMS.data, PARAMS.seed, shuffle=False).dataset, verbose=0).astype(np.float64)
        results.append(split_metrics(split.labels, probs / probs.sum(axis=1, keepdims=True), 2, ["a", "b", "c"]))
    assert results[0] == results[1]
    assert results[0]["accuracy"] > 0.5  # it learned something, so equal metrics mean something


def test_shards_that_do_not_match_the_params_or_the_csv_are_a_clear_error(tmp_path):
    sharded(tmp_path, str(tmp_path / "shards"))
    other = PARAMS.model_copy(update={"data": PARAMS.data.model_copy(update={"format": "tfrecord", "image_size": 48})})
    with pytest.raises(DataError, match="image_size 32, params say data.image_size 48"):
        load_split("train", other.data, tmp_path)
    (tmp_path / "shards" / "train-00002.tfrecord").unlink()
    tfrecord = other.model_copy(update={"data": PARAMS.data.model_copy(update={"format": "tfrecord"})})
    with pytest.raises(DataError, match="train-00002.tfrecord: shard missing"):
        load_split("train", tfrecord.data, tmp_path)


def test_a_filesystem_tensorflow_lacks_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"data.tfrecord_dir: hdfs://nowhere/x: this TensorFlow cannot open hdfs://"):
        write_split("hdfs://nowhere/x", "train", [], [], 32, 10, 10**6)


def test_write_split_decodes_a_shard_at_a_time_and_names_shards_by_count(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", size=(20 + i, 24), seed=i)) for i in range(5)]
    names = write_split(str(tmp_path / "out"), "val", paths, [0, 1, 0, 1, 1], 16, 2, 10**6)
    assert [re.sub(r"-[0-9a-f]{16}\.", ".", name) for name in names] == [f"val-0000{k}-of-00003.tfrecord" for k in range(3)]
    records = list(tf.data.TFRecordDataset([str(tmp_path / "out" / name) for name in names]))
    assert len(records) == 5
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_the_subset_stage_writes_shards_and_an_index_with_tfrecord(tmp_path):
    """The stage itself, on a tiny folder dataset: shards for every split, listed for DVC."""
    for seed, (year, label, i) in enumerate((y, c, i) for y in ("train", "test") for c in ("cat", "dog") for i in range(6)):
        write_image(tmp_path / "photos" / year / label / f"{i}.png", size=(24, 20), seed=seed)
    params = {"download": {"source": "folder", "folder": {"path": str(tmp_path / "photos")}},
              "subset": {"num_classes": 2, "val_fraction": 0.3, "drop_duplicates": False},
              "data": {"format": "tfrecord", "image_size": 32, "shard_size": 3}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    for stage in ("download", "subset"):
        done = subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py")], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    index = json.loads((tmp_path / "data/subset/tfrecord.json").read_text())
    assert index["directory"] == "tfrecord" and index["image_size"] == 32
    for split in ("train", "val", "test"):
        count = len(pd.read_csv(tmp_path / f"data/subset/{split}.csv"))
        assert index["splits"][split]["count"] == count
        files = [tmp_path / "data/subset/tfrecord" / name for name in index["splits"][split]["files"]]
        assert len(files) == -(-count // 3) and all(f.is_file() for f in files)


def test_experiments_sharing_a_tfrecord_dir_keep_their_own_shards(tmp_path):
    """Two subsets written to one external tfrecord_dir once overwrote each other's shards silently."""
    shared, params = str(tmp_path / "shared"), PARAMS.model_copy(update={"data": PARAMS.data.model_copy(
        update={"format": "tfrecord"})})
    expected = {}
    for name in ("a", "b"):
        paths = [str(write_image(tmp_path / name / f"{i}.png", size=(32, 32), seed=ord(name) * 10 + i)) for i in range(5)]
        labels = [i % 3 for i in range(5)]
        files = write_split(shared, "train", paths, labels, 32, 4, 10**6)
        subset = tmp_path / f"subset_{name}"
        subset.mkdir()
        write_index(subset, {"train": files}, shared, {"train": 5}, 32, 4)
        pd.DataFrame({"path": paths, "label": labels, "class_name": "x"}).to_csv(subset / "train.csv", index=False)
        expected[name] = load_many(paths, 32, desc=None)[0]
    for name in ("a", "b"):
        streamed = batches(load_split("train", params.data, tmp_path / f"subset_{name}"), params.data, params.seed, shuffle=False)
        np.testing.assert_array_equal(np.concatenate([x for x, _ in collect(streamed, 0)]), expected[name])
    shard = sorted((tmp_path / "shared").iterdir())[0]
    shard.write_bytes(shard.read_bytes()[:-10])  # cut short: caught before training, not mid-epoch
    with pytest.raises(DataError, match=f"{shard.name}: .* bytes, the index says"):
        for name in ("a", "b"):
            load_split("train", params.data, tmp_path / f"subset_{name}")
