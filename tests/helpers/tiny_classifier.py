"""A two-class EfficientNetB0 classifier trained in seconds on 32 px pictures, for predict and export tests.

Class 0 images are smooth colour gradients, class 1 images are noise: a random base (weights none)
tells them apart once its BatchNormalization statistics are recalibrated (see model.py).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
CLASSES = ["Catharus ustulatus", "Procyon lotor"]


def smooth(rng: np.random.Generator, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    """height x width x 3 uint8: a gradient in a random direction between two random colours."""
    h, w = size
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return (low + t[..., None] * (high - low)).clip(0, 255).astype(np.uint8)


def noisy(rng: np.random.Generator, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def picture(label: int, rng: np.random.Generator, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    return (smooth if label == 0 else noisy)(rng, size)


def dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return np.stack([picture(int(y), rng) for y in labels]).astype("float32"), labels.astype("int32")


@functools.cache
def train_tiny_classifier(seed: int = 0, images: int = 32, epochs: int = 20):
    """Trained once per test session and shared (read-only) by test_predict and test_export.

    The base is frozen and in inference mode, so training the head on the base's features is the
    same as training the whole classifier with the base frozen, and takes a second instead of ten.
    """
    import keras

    from inat_classifier.train.model import base_of, build_classifier, head_of, recalibrate_batchnorm
    from inat_classifier.params import ModelParams
    from inat_classifier.train.training import compile_model, make_deterministic

    make_deterministic(seed)
    model = build_classifier(ModelParams(), num_classes=len(CLASSES), image_size=SIZE)
    x, y = dataset(images, seed)
    recalibrate_batchnorm(base_of(model), [x])
    features = base_of(model)(x, training=False)
    head = keras.Sequential([keras.Input(features.shape[1:]), *head_of(model)])
    compile_model(head, 1e-2)
    head.fit(features, y, epochs=epochs, batch_size=8, verbose=0)
    return model


def write_picture(path: Path, label: int, seed: int, size: tuple[int, int] = (40, 48), mode: str = "RGB") -> Path:
    """A class ``label`` picture of ``size`` (height, width) saved in the format the suffix names."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(picture(label, rng, size)).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
