"""A tiny fine-tuning run through ``training.fit``, optionally killed (SIGKILL) mid-epoch.

Run as a subprocess by test_training.py: ``python resumable_run.py OUT.keras [KILL_EPOCH]``. It
checkpoints after every epoch (the stages wait ``CHECKPOINT_SECONDS`` between writes).
"""

import os
import signal
import sys

import keras
import numpy as np

from inat_classifier.train.dataset import Split, batches, images_only
from inat_classifier.train.model import build_classifier, recalibrate_batchnorm, save_model, unfreeze
from inat_classifier.params import parse_params
from inat_classifier.train import training
from inat_classifier.train.training import compile_model, fit, make_deterministic

EPOCHS = 4


class KillMidEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.kill_epoch, self.epoch = epoch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.kill_epoch and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)


def main(out: str, kill_epoch: int | None) -> None:
    training.CHECKPOINT_SECONDS = 0
    params = parse_params({"data": {"image_size": 32, "batch_size": 8}})
    make_deterministic(params.seed)
    rng = np.random.default_rng(0)
    split = Split("train", rng.integers(0, 255, (32, 32, 32, 3), dtype=np.uint8), np.arange(32, dtype=np.int32) % 3, [], [])
    model = build_classifier(params.model, 3, 32)
    recalibrate_batchnorm(model, images_only(split, params.data, params.seed))
    model = unfreeze(model, 30, batchnorm_trains=True)
    compile_model(model, 1e-3)
    if kill_epoch is not None:  # fit's own callbacks come first, like a real kill after their work
        original = model.fit
        model.fit = lambda *a, callbacks, **k: original(*a, callbacks=[*callbacks, KillMidEpoch(kill_epoch)], **k)
    train, val = batches(split, params.data, params.seed, shuffle=True, augment=params.augment), batches(split, params.data, params.seed, shuffle=False)
    fit(model, train, val, EPOCHS, "finetune", stamp="tiny", first_step=3)
    save_model(model, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
