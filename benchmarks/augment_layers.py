"""Keras' RandAugment, MixUp and CutMix in the input pipeline: plain, and compiled with XLA, as JSON.

    python benchmarks/augment_layers.py [--size 224]

Images/s on one thread (as the input pipeline runs on a CPU) for one batch of 32 random pictures:
the study's affine augmentation alone (XLA-compiled, as always), with RandAugment's 2 operations
after it, and MixUp or CutMix; then the Keras layers compiled with XLA, or why that fails.
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

from inat_classifier.params import Augment
from inat_classifier.train.augment import build_augmenter, build_mixer


def rate(function, rounds: int = 5) -> float:
    function(tf.constant([1, 0], tf.int64))  # builds the graph
    start = time.perf_counter()
    for batch in range(rounds):
        function(tf.constant([1, batch + 1], tf.int64))
    return round(32 * rounds / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (32, args.size, args.size, 3), dtype=np.uint8))
    labels = tf.constant(np.arange(32) % 4)
    study, randaugment = build_augmenter(Augment()), build_augmenter(Augment(randaugment_ops=2))
    mixer = build_mixer(0.2, 1.0, 4)
    steps = {
        "study_affine": lambda seed: study(images, seed),
        "affine_then_randaugment": lambda seed: randaugment(images, seed),
        "mixup_or_cutmix": lambda seed: mixer(tf.cast(images, tf.float32), labels, seed),
    }
    out = {name: rate(tf.function(step)) for name, step in steps.items()}
    for name in ("affine_then_randaugment", "mixup_or_cutmix"):
        try:
            out[f"{name}_xla"] = rate(tf.function(steps[name], jit_compile=True))
        except Exception as exc:  # noqa: BLE001 - an op XLA cannot compile: report it
            out[f"{name}_xla"] = f"fails: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    print(json.dumps({"size": args.size, "images_per_second": out}, indent=2))


if __name__ == "__main__":
    main()
