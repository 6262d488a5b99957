"""Fine-tuning epochs of this project and of the study's approach doing the same work, in alternation.

Usage (from a repository copy whose subset stage has run, as benchmarks/speed.py prepares it):
    python benchmarks/like_for_like.py --unfreeze all auto --rounds 2 [--weights FILE]

Both sides train the same images (data/subset's train split, validating on its val split) at
data.image_size, batch data.batch_size, with the same layers trainable and BatchNormalization in
inference mode (this project's ``batchnorm: frozen``, the study's ``base(inputs, training=False)``;
the study's code also trains BatchNormalization's scale and offset, which this project freezes).
This project's side splits each batch into pieces as its finetune stage does on a CPU (gradients
summed, one update a batch: at 224 px with the whole base and BatchNormalization frozen, one piece);
the study's takes each batch whole, whatever the memory.
The study's side is its code as written: Keras 2 (tf-keras) ``ImageDataGenerator`` with its
augmentation, reading and decoding the files every epoch. Round 0 of each side builds the graphs
and is reported apart; then the sides alternate, one epoch each, so that a busy spell of a shared
machine slows both. Each side lives in a process of its own and runs one fit over all its epochs, as
a user runs either code, each epoch started when the parent says so: calling the study's fit once an
epoch made some of its epochs take 41 s instead of 25 s, in one fit none (docs/speed.md). The numerics
settings in the environment (oneDNN's, bfloat16 math) hold for both sides: run it once per setting.
This project's side fuses elementwise operations where its finetune stage would
(``train.fuse_elementwise``); an empty ``TF_XLA_FLAGS`` in the environment turns that off.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from imagedatagenerator_peer import study_flows, study_model


REPLY = "EPOCH "  # a side's protocol lines; anything else it prints (device, pieces) is passed over


def paced(base: type):
    """A callback (of ``base``, Keras 3's or tf-keras') that starts each epoch when the parent says so and
    reports its wall seconds, validation included (alike for both sides)."""

    class Paced(base):
        def on_epoch_begin(self, epoch, logs=None):
            sys.stdin.readline()  # this side's turn
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            print(REPLY + json.dumps(round(time.perf_counter() - self.began, 1)), flush=True)

    return Paced()


def ours(layers: str, weights: str | None) -> tuple:
    """This project's model, data and training step as the finetune stage sets them up."""
    import keras

    from inat_classifier.data.classnames import subset_classes
    from inat_classifier.params import load_params
    from inat_classifier.train.dataset import batches, load_split
    from inat_classifier.train.model import build_classifier, unfreeze
    from inat_classifier.train.recipe import FUSION_FLAGS
    from inat_classifier.train.training import EpochData, batch_pieces, compile_model, use_device

    params = load_params()
    if weights:
        params = params.model_copy(update={"model": params.model.model_copy(update={"weights": weights})})
    use_device(params.train)
    train, val = load_split("train", params.data), load_split("val", params.data)
    model = build_classifier(params.model, len(subset_classes()), params.data.image_size)
    model = unfreeze(model, "all" if layers == "all" else int(layers), batchnorm_trains=False)
    pieces, piece = batch_pieces(model, params.data, 1)  # as the finetune stage splits a batch on a CPU
    compile_model(model, 1e-4, accumulation=pieces)
    train_batches = batches(train, params.data, params.seed, shuffle=True, augment=params.augment, batch_size=piece)
    val_batches = batches(val, params.data, params.seed, shuffle=False)

    def fit(epochs: int) -> None:
        model.fit(train_batches.dataset, validation_data=val_batches.dataset, epochs=epochs,
                  callbacks=[paced(keras.callbacks.Callback), EpochData(train_batches)], verbose=0, shuffle=False)

    fused = os.environ.get("TF_XLA_FLAGS") == FUSION_FLAGS  # train.fuse_elementwise, as the stage resolves it
    return fit, len(train), len(model.trainable_weights), pieces, fused


def theirs(layers: str, size: int, batch_size: int) -> tuple:
    """The study's code: ImageDataGenerator flows and a tf-keras EfficientNetB0, base unfrozen."""
    train, val = study_flows(Path("data/subset"), size, batch_size)
    model, base = study_model(size, len(train.class_indices))
    import tf_keras as keras

    base.trainable = True
    if layers != "all":  # the Keras example's top N, BatchNormalization left frozen
        for layer in base.layers[: -int(layers)]:
            layer.trainable = False
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])

    def fit(epochs: int) -> None:
        model.fit(train, validation_data=val, epochs=epochs, callbacks=[paced(keras.callbacks.Callback)], verbose=0)

    return fit, train.samples, len(model.trainable_weights), 1, False


def serve(side: str, layers: str, weights: str | None, epochs: int) -> None:
    """A side's process: build its model and data once, then one fit of ``epochs``, each epoch on the parent's word.

    One fit, as a user runs either code: the study's side called once per epoch took 41 s instead of
    25 s in some rounds, and in one fit never (docs/speed.md; the cause inside tf-keras was not traced).
    """
    from inat_classifier.params import load_params
    from inat_classifier.train.recipe import choose_fusion

    params = load_params()
    data = params.data
    if side == "ours":  # before TensorFlow loads, as the finetune stage would for this side's layers, BatchNorm frozen
        frozen = params.finetune.model_copy(update={"batchnorm": "frozen", "unfreeze": "all" if layers == "all" else int(layers)})
        model = params.model.model_copy(update={"weights": weights}) if weights else params.model
        choose_fusion(params.train, data.image_size, frozen, model)
    fit, *facts = ours(layers, weights) if side == "ours" else theirs(layers, data.image_size, data.batch_size)
    print(REPLY + json.dumps(facts), flush=True)
    fit(epochs)


class Side:
    """The parent's handle on one side's process, stopped (SIGSTOP) between its epochs: its threads
    (the study's file-reading queue, tf.data's prefetch) then take no CPU from the other side's epoch."""

    def __init__(self, side: str, layers: str, weights: str | None, epochs: int):
        command = [sys.executable, __file__, "--serve", side, "--unfreeze", layers, "--rounds", str(epochs - 1),
                   *(["--weights", weights] if weights else [])]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.facts = self._reply()

    def _reply(self):
        for line in self.process.stdout:
            if line.startswith(REPLY):
                self.process.send_signal(signal.SIGSTOP)
                return json.loads(line[len(REPLY):])
        raise SystemExit(f"like_for_like.py: a side's process ended early (exit {self.process.wait()})")

    def epoch(self) -> float:
        self.process.send_signal(signal.SIGCONT)
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.stdin.close()
        self.process.wait()


def compare(layers: str, rounds: int, weights: str | None) -> dict:
    sides = {name: Side(name, layers, weights, rounds + 1) for name in ("ours", "study")}
    try:
        first = {name: side.epoch() for name, side in sides.items()}  # graph building included
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(rounds):
            for name, side in sides.items():
                seconds[name].append(side.epoch())
    finally:
        for side in sides.values():
            side.close()
    out = {name: {"train_images": side.facts[0], "trainable_weights": side.facts[1], "pieces_per_batch": side.facts[2],
                  "elementwise_fusion": side.facts[3],
                  "first_epoch_seconds": first[name],
                  "epoch_seconds": seconds[name], "median_epoch_seconds": statistics.median(seconds[name])}
           for name, side in sides.items()}
    ratios = [theirs_ / ours_ for ours_, theirs_ in zip(seconds["ours"], seconds["study"])]
    out["speedup_per_round"] = [round(ratio, 2) for ratio in ratios]
    out["speedup_median"] = round(statistics.median(ratios), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unfreeze", nargs="+", default=["all"], help="all, or a number of top base layers")
    parser.add_argument("--rounds", type=int, default=2, help="measured epochs of each side, after one warm-up")
    parser.add_argument("--weights", help="a weights file for this project's base (the study's side stays random)")
    parser.add_argument("--serve", choices=["ours", "study"], help=argparse.SUPPRESS)  # a side's own process
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.unfreeze[0], args.weights, args.rounds + 1)
    numerics = {name: os.environ.get(name) for name in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_DEFAULT_FPMATH_MODE", "TF_XLA_FLAGS")}
    results = {layers: compare(layers, args.rounds, args.weights) for layers in args.unfreeze}
    print("RESULT " + json.dumps({"numerics": numerics, "unfreeze": results}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
