import numpy as np
import pandas as pd
import pytest

from conftest import write_image
from inat_classifier.augment import build_augmenter
from inat_classifier.dataset import Split, batches, load_split
from inat_classifier.errors import DataError
from inat_classifier.params import Augment, parse_params

PARAMS = parse_params({"data": {"image_size": 32, "batch_size": 4}})


def tiny_split(n=10) -> Split:
    rng = np.random.default_rng(0)
    return Split("train", rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), np.arange(n, dtype=np.int32) % 2, [], [])


def collect(data, epoch=0):
    data.set_epoch(epoch)
    return [(x.numpy(), y.numpy()) for x, y in data.dataset]


def training(split, params=PARAMS):
    return batches(split, params, shuffle=True, augment=True)


def assert_same(first, second):
    assert len(first) == len(second)
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_training_batches_are_identical_for_the_same_seed():
    first, second = collect(training(tiny_split())), collect(training(tiny_split()))
    assert len(first) == 3
    assert_same(first, second)


def test_any_epoch_replays_alone_as_it_ran_after_the_others():
    """What resuming needs: epoch 2 of a fresh pipeline is epoch 2 of one that ran epochs 0 and 1."""
    ran = training(tiny_split())
    epochs = [collect(ran, epoch) for epoch in range(3)]
    assert_same(collect(training(tiny_split()), 2), epochs[2])
    assert_same(collect(ran, 0), epochs[0])
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])  # a new order and augmentation each epoch
    assert sorted(np.concatenate([y for _, y in epochs[1]])) == sorted(tiny_split().labels)


def test_training_batches_are_shuffled_and_augmented_but_evaluation_batches_are_not():
    split = tiny_split()
    plain = collect(batches(split, PARAMS, shuffle=False, augment=False))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in plain]), split.pixels.astype(np.float32))
    trained = np.concatenate([x for x, _ in collect(training(split))])
    assert trained.shape == (10, 32, 32, 3)
    assert not np.allclose(np.sort(trained.reshape(10, -1).sum(1)), np.sort(split.pixels.reshape(10, -1).sum(1)))


def test_augmented_pixels_stay_in_efficientnets_input_range():
    augmenter = build_augmenter(Augment(), seed=1)
    out = augmenter(np.full((2, 32, 32, 3), 250.0, np.float32), training=True).numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0


def test_switching_every_augmentation_off_gives_no_augmenter():
    off = Augment(rotation=0, width_shift=0, height_shift=0, shear=0, zoom=0, horizontal_flip=False, brightness=(1, 1))
    assert build_augmenter(off, seed=0) is None


def test_load_split_skips_unreadable_images_and_reports_them(tmp_path, capsys):
    good = [write_image(tmp_path / f"{i}.jpg", size=(50, 40), seed=i) for i in range(3)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    frame = pd.DataFrame({"path": [str(good[0]), str(bad), str(good[1]), str(good[2])], "label": [0, 1, 1, 0],
                          "class_name": ["a", "b", "b", "a"]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    split = load_split("train", PARAMS, tmp_path)
    assert split.labels.tolist() == [0, 1, 0]
    assert split.pixels.shape == (3, 32, 32, 3)
    assert "bad.jpg" in capsys.readouterr().out
    with pytest.raises(DataError, match="val.csv: missing; run the subset stage first"):
        load_split("val", PARAMS, tmp_path)


def test_the_disk_cache_holds_the_same_pixels_and_batches_as_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = [write_image(tmp_path / f"{i}.png", size=(40 + i, 30), seed=i) for i in range(5)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    listed = [str(paths[0]), str(bad), *map(str, paths[1:])]
    pd.DataFrame({"path": listed, "label": [0, 1, 1, 0, 1, 0], "class_name": list("abbaba")}).to_csv("train.csv", index=False)
    memory = load_split("train", parse_params({"data": {"image_size": 32, "batch_size": 4, "cache": "memory"}}), tmp_path)
    disk = load_split("train", parse_params({"data": {"image_size": 32, "batch_size": 4, "cache": "disk"}}), tmp_path)
    assert isinstance(disk.pixels, np.memmap) and not isinstance(memory.pixels, np.memmap)
    np.testing.assert_array_equal(disk.pixels, memory.pixels)
    assert disk.labels.tolist() == memory.labels.tolist() == [0, 1, 0, 1, 0]
    assert list((tmp_path / "data" / "cache").iterdir()) == []  # unlinked while still in use
    assert_same(collect(training(disk), 1), collect(training(memory), 1))
