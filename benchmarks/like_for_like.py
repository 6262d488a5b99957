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
machine slows both. The process's numerics (oneDNN's, bfloat16 math) hold for both sides: run it
once per setting. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from imagedatagenerator_peer import study_flows, study_model


def timed(call) -> float:
    """Wall seconds of one call of fit for one epoch, validation included (alike for both sides)."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def ours(layers: str, weights: str | None) -> tuple:
    """This project's model, data and training step as the finetune stage sets them up."""
    import keras

    from inat_classifier.data.classnames import subset_classes
    from inat_classifier.params import load_params
    from inat_classifier.train.dataset import batches, load_split
    from inat_classifier.train.model import build_classifier, unfreeze
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

    def epoch(number: int) -> float:
        return timed(lambda: model.fit(train_batches.dataset, validation_data=val_batches.dataset, initial_epoch=number,
                                       epochs=number + 1, callbacks=[EpochData(train_batches)], verbose=0, shuffle=False))

    return epoch, len(train), len(model.trainable_weights), pieces


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

    def epoch(number: int) -> float:
        return timed(lambda: model.fit(train, validation_data=val, initial_epoch=number, epochs=number + 1, verbose=0))

    return epoch, train.samples, len(model.trainable_weights), 1


def compare(layers: str, rounds: int, weights: str | None) -> dict:
    from inat_classifier.params import load_params

    data = load_params().data
    sides = {"ours": ours(layers, weights), "study": theirs(layers, data.image_size, data.batch_size)}
    first = {name: round(side[0](0), 1) for name, side in sides.items()}  # graph building included
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for number in range(1, rounds + 1):
        for name, side in sides.items():
            seconds[name].append(round(side[0](number), 1))
    out = {name: {"train_images": side[1], "trainable_weights": side[2], "pieces_per_batch": side[3],
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
    args = parser.parse_args()
    numerics = {name: os.environ.get(name) for name in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_DEFAULT_FPMATH_MODE")}
    results = {layers: compare(layers, args.rounds, args.weights) for layers in args.unfreeze}
    print("RESULT " + json.dumps({"numerics": numerics, "unfreeze": results}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
