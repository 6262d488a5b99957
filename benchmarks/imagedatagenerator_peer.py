"""The study's approach, for comparison: Keras 2 (tf-keras) ImageDataGenerator reading files every epoch.

Usage: python benchmarks/imagedatagenerator_peer.py SUBSET_DIR --size 224 --head-epochs 20 --finetune-epochs 2
Prints JSON: wall seconds of the frozen phase (process start to its end, like a stage) and seconds
of each fine-tuning epoch (whole base unfrozen, as the study did). Needs `tf-keras` (make bench
installs it). Weights are random (``weights=None``): the cost is that of ImageNet weights.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from tf_keras.preprocessing.image import ImageDataGenerator  # noqa: E402


class EpochTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.perf_counter() - self.began, 2))


def study_flows(subset: Path, size: int, batch_size: int):
    """The study's generators: augmented training images and plain validation images, read from files."""
    frames = {name: pd.read_csv(subset / f"{name}.csv") for name in ("train", "val")}
    # The study's generator settings; EfficientNet rescales 0..255 itself.
    augmenting = ImageDataGenerator(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                                    shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
                                    brightness_range=[0.8, 1.2], fill_mode="reflect")
    flow = dict(x_col="path", y_col="class_name", target_size=(size, size), class_mode="sparse",
                batch_size=batch_size, seed=42)
    train = augmenting.flow_from_dataframe(frames["train"], shuffle=True, **flow)
    val = ImageDataGenerator().flow_from_dataframe(frames["val"], shuffle=False, **flow)
    return train, val


def study_model(size: int, classes: int):
    """EfficientNetB0 (random weights: the cost of ImageNet's), frozen, under a new head; and its base."""
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg",
                                             input_shape=(size, size, 3))
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = base(inputs, training=False)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs), base


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("subset", type=Path)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--head-epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    args = parser.parse_args()
    keras.utils.set_random_seed(42)
    train, val = study_flows(args.subset, args.size, args.batch_size)
    model, base = study_model(args.size, len(train.class_indices))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    head_times = EpochTimes()
    model.fit(train, validation_data=val, epochs=args.head_epochs, callbacks=[head_times], verbose=2)
    frozen_wall = time.perf_counter() - START

    base.trainable = True
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    tune_times = EpochTimes()
    model.fit(train, validation_data=val, epochs=args.finetune_epochs, callbacks=[tune_times], verbose=2)
    print("RESULT " + json.dumps({
        "frozen_phase_wall_seconds": round(frozen_wall, 1),
        "frozen_epoch_seconds": head_times.seconds,
        "finetune_epoch_seconds": tune_times.seconds,
        "train_images": train.samples,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }))


if __name__ == "__main__":
    main()
