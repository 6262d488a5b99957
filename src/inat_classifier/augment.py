"""The study's ImageDataGenerator augmentation as one fused, stateless tf.data step.

ImageDataGenerator composed rotation, shift, shear and zoom into one affine matrix per image and
resampled once; so does this, with one ``ImageProjectiveTransformV3`` per batch (Keras' separate
preprocessing layers resample four times and cost several times more, which on a 2-core CPU is time
taken from the model). Semantics follow ImageDataGenerator: ``rotation`` and ``shear`` in degrees,
shifts as fractions of the side, zoom factors drawn per axis from [1 - zoom, 1 + zoom], brightness a
factor in [low, high] (PIL's ImageEnhance.Brightness, a multiplication), ``fill_mode`` as scipy's,
bilinear interpolation, the horizontal flip applied to the transformed image.

Random numbers are stateless and keyed by (seed, epoch, batch): any epoch can be replayed alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from .params import Augment

Augmenter = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (uint8 batch, [2] int64 seed) -> float32 batch


def is_identity(config: Augment) -> bool:
    geometric = (config.rotation, config.width_shift, config.height_shift, config.shear, config.zoom)
    return not any(geometric) and not config.horizontal_flip and tuple(config.brightness) == (1.0, 1.0)


def build_augmenter(config: Augment) -> Augmenter | None:
    """A function of a uint8 batch and a seed giving augmented 0..255 float32 images; None when all off."""
    if is_identity(config):
        return None
    fill_mode = config.fill_mode.upper()
    rotation, shear = math.radians(config.rotation), math.radians(config.shear)
    low, high = config.brightness

    def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        count = tf.shape(images)[0]
        height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)

        def uniform(index: int, low: float, high: float) -> tf.Tensor:
            key = tf.stack([seed[0], seed[1] * 8 + index])
            return tf.random.stateless_uniform([count], key, low, high)

        theta = uniform(0, -rotation, rotation)
        shift_rows = uniform(1, -config.height_shift, config.height_shift) * height
        shift_cols = uniform(2, -config.width_shift, config.width_shift) * width
        shear_angle = uniform(3, -shear, shear)
        zoom_rows = uniform(4, 1.0 - config.zoom, 1.0 + config.zoom)
        zoom_cols = uniform(5, 1.0 - config.zoom, 1.0 + config.zoom)
        flip = tf.where(uniform(6, 0.0, 1.0) < 0.5, -1.0, 1.0) if config.horizontal_flip else tf.ones([count])
        factor = uniform(7, low, high)

        # ImageDataGenerator's output -> input matrix in (row, col): rotation @ shift @ shear @ zoom about
        # the centre, after the flip of the output's columns (also about the centre).
        cos, sin = tf.cos(theta), tf.sin(theta)
        zeros, ones = tf.zeros([count]), tf.ones([count])

        def matrix(rows: list[list[tf.Tensor]]) -> tf.Tensor:
            return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)  # count x 3 x 3

        rotate = matrix([[cos, -sin, zeros], [sin, cos, zeros], [zeros, zeros, ones]])
        shift = matrix([[ones, zeros, shift_rows], [zeros, ones, shift_cols], [zeros, zeros, ones]])
        shear_m = matrix([[ones, -tf.sin(shear_angle), zeros], [zeros, tf.cos(shear_angle), zeros], [zeros, zeros, ones]])
        zoom = matrix([[zoom_rows, zeros, zeros], [zeros, zoom_cols, zeros], [zeros, zeros, ones]])
        flip_m = matrix([[ones, zeros, zeros], [zeros, flip, zeros], [zeros, zeros, ones]])
        centre_rows, centre_cols = height / 2.0 - 0.5, width / 2.0 - 0.5
        to_centre = matrix([[ones, zeros, -centre_rows * ones], [zeros, ones, -centre_cols * ones], [zeros, zeros, ones]])
        back = matrix([[ones, zeros, centre_rows * ones], [zeros, ones, centre_cols * ones], [zeros, zeros, ones]])
        m = back @ rotate @ shift @ shear_m @ zoom @ flip_m @ to_centre
        # The op's (x, y) are (col, row): x_in = m11 x + m10 y + m12, y_in = m01 x + m00 y + m02.
        transforms = tf.stack(
            [m[:, 1, 1], m[:, 1, 0], m[:, 1, 2], m[:, 0, 1], m[:, 0, 0], m[:, 0, 2], zeros, zeros], axis=-1
        )
        moved = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=tf.shape(images)[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode=fill_mode,
        )
        return tf.clip_by_value(tf.cast(moved, tf.float32) * factor[:, None, None, None], 0.0, 255.0)

    return augment
