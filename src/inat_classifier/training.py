"""What both training stages share: determinism, compiling, fitting with dvclive logging."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf
from dvclive import Live

LIVE_DIR = Path("dvclive")


def make_deterministic(seed: int) -> None:
    """Same seed, same machine, same bytes: seeds every RNG and refuses non-deterministic ops."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


class LiveLogger(keras.callbacks.Callback):
    """Per-epoch loss and accuracy (train and validation) to dvclive, without touching dvc.yaml.

    dvc.yaml declares these files itself; dvclive would otherwise rewrite it on every run.
    """

    def __init__(self, directory: Path):
        super().__init__()
        self.live = Live(str(directory), dvcyaml=False, save_dvc_exp=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for name, value in sorted((logs or {}).items()):
            if name != "learning_rate":
                self.live.log_metric(name, round(float(value), 6))
        self.live.next_step()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.live.end()


def fit(
    model: keras.Model,
    train: tf.data.Dataset,
    val: tf.data.Dataset,
    epochs: int,
    live_dir: Path,
    patience: int = 0,
) -> keras.callbacks.History:
    callbacks: list[keras.callbacks.Callback] = [LiveLogger(live_dir)]
    if patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        )
    # The datasets shuffle themselves (seeded); Keras must not try to.
    return model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks, verbose=2, shuffle=False)
