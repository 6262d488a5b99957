"""The study's ImageDataGenerator augmentation as one fused, stateless tf.data step.

ImageDataGenerator composed rotation, shift, shear and zoom into one affine matrix per image and
resampled once; so does this, in one XLA-compiled loop per batch that also applies the brightness
(Keras' separate preprocessing layers resample four times and cost several times more, and every
cycle the pipeline spends on a 2-core CPU is taken from the model). Semantics follow
ImageDataGenerator: ``rotation`` and ``shear`` in degrees, shifts as fractions of the side, zoom
factors drawn per axis from [1 - zoom, 1 + zoom], brightness a
factor in [low, high] (PIL's ImageEnhance.Brightness, a multiplication), ``fill_mode`` as scipy's,
bilinear interpolation, the horizontal flip applied to the transformed image.

Off by default, Keras' own layers add RandAugment (``augment.randaugment_ops``) after that step, and
MixUp and CutMix (``finetune.mixup``, ``finetune.cutmix``) on whole batches with one-hot labels.
Random numbers are stateless and keyed by (seed, epoch, batch): any epoch can be replayed alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import tensorflow as tf

from ..params import Augment

Augmenter = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (uint8 batch, [2] int64 seed) -> float32 batch
# (float32 batch, int labels, [2] int64 seed) -> (float32 batch, float32 one-hot label shares)
Mixer = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
# Streams folded into a batch's key, one per use, so no two uses share draws
CHOICE_STREAM, RANDAUGMENT_STREAMS, COIN_STREAM, MIX_STREAM = 1, 2, 99, 100  # RandAugment: 2 .. 12


class KeyedSeeds(keras.random.SeedGenerator):
    """Seeds for Keras' random layers derived from one batch's key, not from a variable.

    A Keras layer draws from a SeedGenerator whose state advances with every draw, so a batch's
    augmentation would depend on all the batches before it; here draw n is a function of the key
    and n alone, and a resumed or replayed epoch sees the batches an uninterrupted run saw.
    """

    def __init__(self, key: tf.Tensor, stream: int):  # deliberately without the parent's state variable
        self.key = tf.random.experimental.stateless_fold_in(key, stream)
        self.draws = 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        self.draws += 1
        return tf.random.experimental.stateless_fold_in(self.key, self.draws)


def _keyed_transform(layer: keras.layers.Layer, images: tf.Tensor, seed: tf.Tensor, stream: int) -> dict:
    return layer.get_random_transformation(images, training=True, seed=KeyedSeeds(seed, stream))


def is_identity(config: Augment) -> bool:
    geometric = (config.rotation, config.width_shift, config.height_shift, config.shear, config.zoom)
    photometric = tuple(config.brightness) != (1.0, 1.0) or config.randaugment_ops
    return not any(geometric) and not config.horizontal_flip and not photometric


def build_augmenter(config: Augment) -> Augmenter | None:
    """A function of a uint8 batch and a seed giving augmented 0..255 float32 images; None when all off."""
    if is_identity(config):
        return None
    affine = _affine_augmenter(config)
    if not config.randaugment_ops:
        return affine
    randaugment = keras.layers.RandAugment(
        value_range=(0, 255), num_ops=config.randaugment_ops, factor=config.randaugment_factor, dtype="float32"
    )

    def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        images = affine(images, seed)
        if not randaugment.built:
            randaugment.build(images.shape)
        # RandAugment's own draw of its operations uses the layer's generator: drawn here from the key.
        choice = tf.random.stateless_uniform(
            [randaugment.num_ops], tf.random.experimental.stateless_fold_in(seed, CHOICE_STREAM), 0,
            len(randaugment._AUGMENT_LAYERS), tf.int32,
        )
        transforms = {name: _keyed_transform(getattr(randaugment, name), images, seed, RANDAUGMENT_STREAMS + n)
                      for n, name in enumerate(randaugment._AUGMENT_LAYERS)}
        images = randaugment.transform_images(images, {"transforms": transforms, "layer_idxes": choice})
        return tf.clip_by_value(images, 0.0, 255.0)

    return augment


def build_mixer(mixup: float, cutmix: float, num_classes: int) -> Mixer | None:
    """Keras' MixUp and CutMix over a batch, labels made one-hot first; with both on, a fair coin picks
    one for each batch (as timm does). None when both are off."""
    mixers = [keras.layers.MixUp(alpha=mixup, dtype="float32")] if mixup else []
    if cutmix:
        mixers.append(keras.layers.CutMix(factor=cutmix, dtype="float32"))
    if not mixers:
        return None

    def mix(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        shares = tf.one_hot(tf.cast(labels, tf.int32), num_classes)

        def with_layer(layer: keras.layers.Layer) -> Callable[[], tuple[tf.Tensor, tf.Tensor]]:
            def apply() -> tuple[tf.Tensor, tf.Tensor]:
                transform = _keyed_transform(layer, images, seed, MIX_STREAM)
                return layer.transform_images(images, transform), layer.transform_labels(shares, transform)
            return apply

        if len(mixers) == 1:
            return with_layer(mixers[0])()
        heads = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, COIN_STREAM)) < 0.5
        return tf.cond(heads, with_layer(mixers[0]), with_layer(mixers[1]))

    return mix


def _affine_augmenter(config: Augment) -> Augmenter:
    """The study's augmentation: one affine resampling and the brightness factor per image."""
    fill_mode = config.fill_mode
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
        # In (x, y) = (col, row): x_in = m11 x + m10 y + m12, y_in = m01 x + m00 y + m02.
        affine = tf.stack([m[:, 1, 1], m[:, 1, 0], m[:, 1, 2], m[:, 0, 1], m[:, 0, 0], m[:, 0, 2]], axis=-1)
        return _resample(images, affine, factor, fill_mode)

    return augment


def _source(coordinate: tf.Tensor, size: tf.Tensor, fill_mode: str) -> tf.Tensor:
    """Where an output pixel reads along one axis, as ImageProjectiveTransformV3's fill modes say."""
    last = size - 1.0
    if fill_mode == "constant":  # reads outside the image give 0
        return coordinate
    if fill_mode == "reflect":  # dcba|abcd|dcba
        period = 2.0 * size
        below = coordinate + period * tf.floor(-coordinate / period)
        below = tf.where(below < -size, below + period, -below - 1.0)
        above = coordinate - period * tf.floor(coordinate / period)
        above = tf.where(above >= size, period - above - 1.0, above)
        coordinate = tf.where(coordinate < 0, below, tf.where(coordinate > last, above, coordinate))
    elif fill_mode == "wrap":  # abcd|abcd|abcd
        below = coordinate + size * (tf.floor(-coordinate / last) + 1.0)
        above = coordinate - size * tf.floor(coordinate / last)
        coordinate = tf.where(coordinate < 0, below, tf.where(coordinate > last, above, coordinate))
    return tf.clip_by_value(coordinate, 0.0, last)  # nearest, and the others' edges


@tf.function(jit_compile=True, reduce_retracing=True)
def _resample(images: tf.Tensor, affine: tf.Tensor, factor: tf.Tensor, fill_mode: str) -> tf.Tensor:
    """Bilinear affine resampling, brightness and clipping as one XLA-compiled loop.

    The same pixels as ``ImageProjectiveTransformV3`` on float input (tested), at under half its
    cost on a CPU core: the op recomputes each pixel's source for every channel, and the brightness
    and clipping would be further passes. ``affine`` rows are the op's first six transform numbers.
    """
    shape = tf.shape(images)
    count, height, width = shape[0], shape[1], shape[2]
    rows_f, cols_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    cols, rows = tf.range(cols_f)[None, None, :], tf.range(rows_f)[None, :, None]
    a = affine[:, :, None, None]
    x = _source(a[:, 0] * cols + a[:, 1] * rows + a[:, 2], cols_f, fill_mode)
    y = _source(a[:, 3] * cols + a[:, 4] * rows + a[:, 5], rows_f, fill_mode)
    left, top = tf.floor(x), tf.floor(y)
    dx, dy = (x - left)[..., None], (y - top)[..., None]
    pixels = tf.reshape(images, [-1, shape[3]])
    first = tf.range(count)[:, None, None] * (height * width)

    def read(row: tf.Tensor, col: tf.Tensor) -> tf.Tensor:
        inside = (row >= 0.0) & (row < rows_f) & (col >= 0.0) & (col < cols_f)
        row = tf.cast(tf.clip_by_value(row, 0.0, rows_f - 1.0), tf.int32)
        col = tf.cast(tf.clip_by_value(col, 0.0, cols_f - 1.0), tf.int32)
        value = tf.cast(tf.gather(pixels, first + row * width + col), tf.float32)
        return tf.where(inside[..., None], value, 0.0)

    upper = (1.0 - dx) * read(top, left) + dx * read(top, left + 1.0)
    lower = (1.0 - dx) * read(top + 1.0, left) + dx * read(top + 1.0, left + 1.0)
    moved = (1.0 - dy) * upper + dy * lower
    return tf.clip_by_value(moved * factor[:, None, None, None], 0.0, 255.0)
