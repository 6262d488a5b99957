import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import write_image
from inat_classifier.train.augment import build_augmenter, build_mixer
from inat_classifier.train.dataset import Split, batches, load_split
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
    return batches(split, params.data, params.seed, shuffle=True, augment=params.augment)


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
    plain = collect(batches(split, PARAMS.data, PARAMS.seed, shuffle=False))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in plain]), split.pixels.astype(np.float32))
    trained = np.concatenate([x for x, _ in collect(training(split))])
    assert trained.shape == (10, 32, 32, 3)
    assert not np.allclose(np.sort(trained.reshape(10, -1).sum(1)), np.sort(split.pixels.reshape(10, -1).sum(1)))


def test_augmented_pixels_stay_in_efficientnets_input_range_and_depend_only_on_the_seed():
    augmenter = build_augmenter(Augment(brightness=(1.5, 2.0)))
    images = tf.constant(np.full((2, 32, 32, 3), 250, np.uint8))
    out = augmenter(images, tf.constant([1, 7], tf.int64)).numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0 and out.max() == 255.0  # brightened, then clipped
    again = augmenter(images, tf.constant([1, 7], tf.int64)).numpy()
    other = augmenter(images[:, :, :, :] // 2 + 1, tf.constant([1, 8], tf.int64)).numpy()
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, other)


def test_each_transform_moves_pixels_as_imagedatagenerator_would():
    """A bright dot moved by one transform at a time lands where ImageDataGenerator's matrix says."""
    image = np.zeros((1, 33, 33, 3), np.uint8)
    image[0, 8, 24] = 255  # row 8, column 24; the centre is (16, 16)
    off = dict(rotation=0, width_shift=0, height_shift=0, shear=0, zoom=0, horizontal_flip=False, brightness=(1, 1))

    def dot(seed=0, **setting):
        out = build_augmenter(Augment(**{**off, **setting}, fill_mode="constant"))(
            tf.constant(image), tf.constant([0, seed], tf.int64)).numpy()[0, ..., 0]
        return np.unravel_index(out.argmax(), out.shape)

    assert {dot(seed, horizontal_flip=True) for seed in range(12)} == {(8, 24), (8, 8)}  # a coin toss
    row, col = dot(rotation=180)  # a random angle: the dot stays on its circle around the centre
    assert abs(np.hypot(row - 16, col - 16) - np.hypot(8, 8)) <= 1.5
    row, col = dot(width_shift=0.5)  # columns move, rows stay
    assert row == 8 and col != 24
    row, col = dot(zoom=0.5)  # the dot moves along the ray from the centre
    assert (row - 16) * (col - 16) < 0


@pytest.mark.parametrize("fill_mode", ["reflect", "wrap", "constant", "nearest"])
def test_the_fused_resample_reads_the_pixels_tensorflows_transform_op_would(fill_mode):
    """Turns, stretches and shifts far past the edges, against ImageProjectiveTransformV3 itself."""
    from inat_classifier.train.augment import _resample

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 33, 40, 3), dtype=np.uint8)
    angle, scale = rng.uniform(-np.pi, np.pi, 6), rng.uniform(0.5, 2.5, 6)
    affine = np.stack([scale * np.cos(angle), -scale * np.sin(angle), rng.uniform(-100, 100, 6),
                       scale * np.sin(angle), scale * np.cos(angle), rng.uniform(-100, 100, 6)], 1).astype(np.float32)
    factor = rng.uniform(0.5, 1.5, 6).astype(np.float32)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=np.pad(affine, ((0, 0), (0, 2))), output_shape=[33, 40],
        fill_value=0.0, interpolation="BILINEAR", fill_mode=fill_mode.upper()).numpy()
    expected = np.clip(expected * factor[:, None, None, None], 0, 255)
    out = _resample(tf.constant(images), tf.constant(affine), tf.constant(factor), fill_mode).numpy()
    np.testing.assert_allclose(out, expected, atol=0.01)
    assert len(np.unique(out)) > 20  # interpolated, not a flat fill


def test_every_pipeline_shards_by_data_and_keeps_to_one_untuned_thread_without_a_gpu():
    """What tf.distribute needs (each worker keeps its share of every batch) and what the 2-core CPU needs."""
    from inat_classifier.train.features import feature_batches

    split = tiny_split()
    features = np.zeros((1, len(split), 8), np.float32)
    pipelines = [training(split), batches(split, PARAMS.data, PARAMS.seed, shuffle=False),
                 feature_batches(features, split.labels, PARAMS.data, PARAMS.seed, shuffle=True)]
    for data in pipelines:
        options = data.dataset.options()
        assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
        assert options.threading.private_threadpool_size == 1
        assert options.autotune.enabled is False  # its thread delayed the start of epochs by seconds


def test_load_split_skips_unreadable_images_and_reports_them(tmp_path, capsys):
    good = [write_image(tmp_path / f"{i}.jpg", size=(50, 40), seed=i) for i in range(3)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    frame = pd.DataFrame({"path": [str(good[0]), str(bad), str(good[1]), str(good[2])], "label": [0, 1, 1, 0],
                          "class_name": ["a", "b", "b", "a"]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    split = load_split("train", PARAMS.data, tmp_path)
    assert split.labels.tolist() == [0, 1, 0]
    assert split.pixels.shape == (3, 32, 32, 3)
    assert "bad.jpg" in capsys.readouterr().out
    with pytest.raises(DataError, match="val.csv: missing; run the subset stage first"):
        load_split("val", PARAMS.data, tmp_path)


def test_the_disk_cache_holds_the_same_pixels_and_batches_as_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = [write_image(tmp_path / f"{i}.png", size=(40 + i, 30), seed=i) for i in range(5)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    listed = [str(paths[0]), str(bad), *map(str, paths[1:])]
    pd.DataFrame({"path": listed, "label": [0, 1, 1, 0, 1, 0], "class_name": list("abbaba")}).to_csv("train.csv", index=False)
    memory = load_split("train", parse_params({"data": {"image_size": 32, "batch_size": 4, "cache": "memory"}}).data, tmp_path)
    disk = load_split("train", parse_params({"data": {"image_size": 32, "batch_size": 4, "cache": "disk"}}).data, tmp_path)
    assert isinstance(disk.pixels, np.memmap) and not isinstance(memory.pixels, np.memmap)
    np.testing.assert_array_equal(disk.pixels, memory.pixels)
    assert disk.labels.tolist() == memory.labels.tolist() == [0, 1, 0, 1, 0]
    assert list((tmp_path / "data" / "cache").iterdir()) == []  # unlinked while still in use
    assert_same(collect(training(disk), 1), collect(training(memory), 1))


@pytest.mark.parametrize("rows,sizes", [(33, [8, 8, 8, 9]), (34, [8, 8, 8, 8, 2]), (32, [8, 8, 8, 8]), (5, [5])])
def test_a_last_batch_too_small_for_every_replica_joins_the_one_before_and_rows_keep_their_order(rows, sizes):
    params = parse_params({"data": {"image_size": 32, "batch_size": 8}})
    split = tiny_split(rows)
    plain = batches(split, params.data, params.seed, shuffle=True)
    plain.set_epoch(3)
    served = [(x.numpy(), y.numpy()) for x, y in plain.for_replicas(2)]
    assert [len(y) for _, y in served] == sizes
    expected = collect(plain, epoch=3)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in served]), np.concatenate([x for x, _ in expected]))
    assert plain.for_replicas(1) is plain.dataset


def test_fewer_images_than_replicas_is_a_one_line_error():
    data = batches(tiny_split(1), PARAMS.data, PARAMS.seed, shuffle=False)
    with pytest.raises(DataError, match="1 images cannot give each of 2 replicas one"):
        data.for_replicas(2)


def test_randaugment_mixup_and_cutmix_are_keyed_by_seed_epoch_and_batch_like_the_rest():
    """Keras' layers draw from a variable that advances with each batch; keyed draws replay any epoch."""
    params = parse_params({"data": {"image_size": 32, "batch_size": 4}, "augment": {"randaugment_ops": 2},
                           "finetune": {"mixup": 0.4, "cutmix": 1.0}})
    mixer = build_mixer(params.finetune.mixup, params.finetune.cutmix, 2)

    def mixed(split):
        return batches(split, params.data, params.seed, shuffle=True, augment=params.augment, mix=mixer)

    ran = mixed(tiny_split())
    epochs = [collect(ran, epoch) for epoch in range(2)]
    assert_same(collect(mixed(tiny_split()), 1), epochs[1])  # a fresh pipeline replays epoch 1 alone
    labels = np.concatenate([y for _, y in epochs[0]])
    assert labels.shape == (10, 2) and np.allclose(labels.sum(axis=1), 1.0)  # one-hot shares
    assert ((labels > 0.01) & (labels < 0.99)).any()  # some images are blends of two classes
    images = np.concatenate([x for x, _ in epochs[0]])
    assert images.min() >= 0.0 and images.max() <= 255.0
    without = parse_params({"data": {"image_size": 32, "batch_size": 4}})  # the study's augmentation alone
    assert not np.array_equal(images, np.concatenate([x for x, _ in collect(training(tiny_split(), without))]))


def test_randaugment_alone_augments_and_each_mixer_alone_keeps_every_share_of_the_batch():
    split = tiny_split()
    study_off = {"rotation": 0, "width_shift": 0, "height_shift": 0, "shear": 0, "zoom": 0, "horizontal_flip": False,
                 "brightness": [1, 1]}
    assert build_augmenter(Augment(**study_off)) is None
    randaugment = build_augmenter(Augment(**study_off, randaugment_ops=1, randaugment_factor=1.0))
    outputs = [randaugment(tf.constant(split.pixels), tf.constant([3, batch], tf.int64)).numpy() for batch in range(4)]
    assert any(not np.array_equal(out, split.pixels.astype(np.float32)) for out in outputs)
    assert build_mixer(0.0, 0.0, 2) is None
    pixels = split.pixels.astype(np.float32)
    own = np.arange(len(pixels))  # one class per image: a row's shares name the two images it took
    for name, mixer in (("mixup", build_mixer(0.4, 0.0, 10)), ("cutmix", build_mixer(0.0, 1.0, 10))):
        images, shares = (t.numpy() for t in mixer(tf.constant(pixels), tf.constant(own), tf.constant([3, 1], tf.int64)))
        assert np.allclose(shares.sum(axis=1), 1.0) and ((shares > 0.01) & (shares < 0.99)).any()
        for i, row in enumerate(shares):  # the label shares are the shares of the pixels
            other = np.argsort(row)[-1] if np.argsort(row)[-1] != i else np.argsort(row)[-2]
            if name == "mixup":
                np.testing.assert_allclose(images[i], row[i] * pixels[i] + row[other] * pixels[other], atol=1e-3)
            else:
                taken = (images[i] != pixels[i]).any(axis=-1).mean()  # random pixels: differing ones are pasted
                assert taken == pytest.approx(row[other], abs=0.05)
