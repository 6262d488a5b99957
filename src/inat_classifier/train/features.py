"""Outputs per view of a split: the frozen phase on cached base features (``train_head.feature_cache``),
and test-time augmentation.

A frozen base in inference mode maps an image to the same features in every epoch, so running it
once per image and view, then training the head on the stored features, gives the head the same
inputs at a fraction of the cost. View 0 is the plain image; views 1..N-1 are augmented with the
seeds of epochs 1..N-1 (in split order, not shuffled). Epoch ``e`` of the head trains on view
``e mod N``: the head sees N distinct augmentations instead of one per epoch, the trade made for
the speed (with N equal to the number of epochs nothing is traded).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from .dataset import Batches, Order, Split, batches, epoch_batches
from .model import base_of, head_of
from ..params import Augment, Data


def head_model(model: keras.Model) -> keras.Model:
    """The classifier's head as a model of its own, sharing its layers (training one trains both).

    It trains under the classifier's distribution strategy, where the shared variables live.
    """
    base = base_of(model)
    with model.distribute_strategy.scope():
        inputs = keras.Input(base.output_shape[1:], name="features")
        x = inputs
        for layer in head_of(model):
            x = layer(x)
        return keras.Model(inputs, x, name="head")


class FrozenBaseHead(keras.Model):
    """The frozen phase without the cache: the base runs in inference mode on every batch.

    A nested ``training=False`` in a functional model does not hold in Keras 3 (the outer call's
    ``training`` wins), which would switch on the base's stochastic-depth dropout; a direct call does.
    Training this trains the classifier's head; only the classifier is saved.
    """

    def __init__(self, model: keras.Model):
        with model.distribute_strategy.scope():  # trains where the classifier's variables live
            super().__init__(name="frozen_base_head")
        self.base, self.head = base_of(model), head_model(model)
        self.built = True  # both parts are built already

    def call(self, images: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.head(self.base(images, training=False), training=training)


def view_outputs(
    network: keras.Model, split: Split, data: Data, seed: int, augment: Augment, views: int, what: str, replicas: int = 1
) -> np.ndarray:
    """views x N x ... float32 outputs of ``network`` on ``split``, in the split's order: view 0 of the
    plain images, view v of the images augmented as epoch v augments them. Serves the frozen base's
    feature cache and test-time augmentation (``evaluate.tta``) alike."""
    out = []
    for view in tqdm(range(views), desc=f"{what} of {split.name}", unit="view", disable=views == 1):
        view_batches = batches(split, data, seed, shuffle=False, augment=augment if view > 0 else None)
        view_batches.set_epoch(view)
        out.append(network.predict(view_batches.for_replicas(replicas), verbose=0).astype(np.float32))
    return np.stack(out)


def base_features(model: keras.Model, split: Split, data: Data, seed: int, augment: Augment, views: int) -> np.ndarray:
    """views x N x F float32 features of ``split`` from the frozen base, in the split's order."""
    replicas = model.distribute_strategy.num_replicas_in_sync
    return view_outputs(base_of(model), split, data, seed, augment, views, "features", replicas)


def feature_batches(features: np.ndarray, labels: np.ndarray, data: Data, seed: int, shuffle: bool) -> Batches:
    """Epoch ``e`` serves view ``e mod views`` of ``features``, in the order images would have."""
    views, order = len(features), Order.of(len(labels), data, seed, shuffle)
    stream = epoch_batches(
        lambda e, rows: features[e % views][rows], labels, features.shape[2:], tf.float32, data.batch_size, order
    )
    return Batches.of(stream, order, data.batch_size)
