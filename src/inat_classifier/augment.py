"""The study's ImageDataGenerator augmentation, rebuilt from Keras 3 preprocessing layers.

Keras 3 has no ImageDataGenerator. Mapping of its arguments:
rotation_range (degrees) -> RandomRotation(degrees / 360); width/height_shift_range -> RandomTranslation;
shear_range -> RandomShear (Keras takes a fraction, not degrees); zoom_range -> RandomZoom;
horizontal_flip -> RandomFlip; brightness_range [low, high] -> RandomBrightness(low - 1, high - 1),
which shifts rather than scales brightness by up to that fraction of the 0..255 range.
"""

from __future__ import annotations

import keras

from .params import Augment


def build_augmenter(config: Augment, seed: int) -> keras.Sequential | None:
    """A seeded pipeline of random layers for 0..255 float images; None when all are switched off."""
    fill = config.fill_mode
    layers: list[keras.Layer] = []
    if config.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation / 360.0, fill_mode=fill, seed=seed + 1))
    if config.width_shift or config.height_shift:
        layers.append(
            keras.layers.RandomTranslation(config.height_shift, config.width_shift, fill_mode=fill, seed=seed + 2)
        )
    if config.shear:
        layers.append(keras.layers.RandomShear(config.shear, config.shear, fill_mode=fill, seed=seed + 3))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, config.zoom, fill_mode=fill, seed=seed + 4))
    low, high = config.brightness
    if (low, high) != (1.0, 1.0):
        layers.append(keras.layers.RandomBrightness((low - 1.0, high - 1.0), value_range=(0, 255), seed=seed + 5))
    return keras.Sequential(layers, name="augment") if layers else None
