"""Candidate levers for whole-base fine-tuning on a CPU, each on the model alone, printed as JSON.

    python benchmarks/finetune_levers.py [--size 224] [--rounds 4]

Each setting runs in its own process (oneDNN and TensorFlow's thread pools read their settings
once): ``train_on_batch`` on one fixed batch of 32 random images with EfficientNetB0's whole base
trainable and BatchNormalization in inference mode (the study's recipe with pretrained weights),
after one call that builds the graph (reported apart). The study's side is its Keras 2 (tf-keras)
model, for scale. Rates are images per second, one per round; a shared machine only ever makes a
round slower, so compare the best rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from inat_classifier.train.recipe import FUSION_FLAGS  # no TensorFlow: the parent sets each child's flags

# name -> (side, precision, XLA, environment)
LEVERS = {
    "float32": ("ours", "float32", False, {}),
    "study_float32": ("study", "float32", False, {}),
    "mixed_bfloat16": ("ours", "mixed_bfloat16", False, {}),
    "study_mixed_bfloat16": ("study", "mixed_bfloat16", False, {}),
    "xla": ("ours", "float32", True, {}),
    "one_inter_op_thread": ("ours", "float32", False, {"INTER_OP_THREADS": "1"}),
    "onednn_bf16_math": ("ours", "float32", False, {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}),
    "onednn_off": ("ours", "float32", False, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "fused_batchnorm": ("ours", "float32", False, {"FUSED_BATCHNORM": "1"}),
    "fuse_elementwise": ("ours", "float32", False, {"TF_XLA_FLAGS": FUSION_FLAGS}),  # train.fuse_elementwise
    "study_onednn_off": ("study", "float32", False, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
}


def use_fused_batchnorm() -> None:
    """Keras 3 normalises with separate TensorFlow ops (moments, then scale and shift); try one fused op.

    A probe only: the layers keep Keras' class and variables; in training mode the moving statistics
    take the population variance, as Keras'.
    """
    import keras
    import tensorflow as tf

    keras_call = keras.layers.BatchNormalization.call

    def call(self, inputs, training=None, mask=None):
        if mask is not None or len(inputs.shape) != 4 or self.axis not in (-1, 3) or inputs.dtype != tf.float32:
            return keras_call(self, inputs, training, mask)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)[:3]
            count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
            variance = variance * (count - 1) / count
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1 - self.momentum))
            return outputs
        return tf.compat.v1.nn.fused_batch_norm(inputs, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                                                epsilon=self.epsilon, is_training=False)[0]

    keras.layers.BatchNormalization.call = call


def measure(side: str, precision: str, xla: bool, size: int, rounds: int) -> dict:
    import numpy as np
    import tensorflow as tf

    if os.environ.get("INTER_OP_THREADS"):
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["INTER_OP_THREADS"]))
    rng = np.random.default_rng(0)
    images, labels = rng.uniform(0, 255, (32, size, size, 3)).astype("float32"), rng.integers(0, 4, 32)
    if side == "ours":
        import keras

        if os.environ.get("FUSED_BATCHNORM"):
            use_fused_batchnorm()

        from inat_classifier.params import ModelParams
        from inat_classifier.train.model import build_classifier, unfreeze
        from inat_classifier.train.training import compile_model

        keras.mixed_precision.set_global_policy(precision)
        model = unfreeze(build_classifier(ModelParams(), 4, size), "all", batchnorm_trains=False)
        compile_model(model, 1e-4, jit_compile=xla)
    else:
        import tf_keras as keras

        sys.path.insert(0, os.path.dirname(__file__))
        from imagedatagenerator_peer import study_model

        keras.mixed_precision.set_global_policy(precision)
        model, base = study_model(size, 4)
        base.trainable = True
        model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.train_on_batch(images, labels)
    first = time.perf_counter() - start
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        rates.append(round(len(labels) / (time.perf_counter() - start), 1))
    return {"first_call_seconds": round(first, 1), "images_per_second": rates, "best": max(rates),
            "trainable_weights": len(model.trainable_weights)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--only", nargs="+", choices=list(LEVERS), default=list(LEVERS))
    parser.add_argument("--worker", choices=list(LEVERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        side, precision, xla, _ = LEVERS[args.worker]
        print("RESULT " + json.dumps(measure(side, precision, xla, args.size, args.rounds)))
        return
    results = {}
    for name in args.only:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **LEVERS[name][3]}
        done = subprocess.run([sys.executable, __file__, "--worker", name, "--size", str(args.size), "--rounds",
                               str(args.rounds)], env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-3000:] + f"\n{name} failed (the study's side needs tf-keras: make bench)")
        results[name] = json.loads(done.stdout.split("RESULT ", 1)[1])
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    base = results.get("float32", {}).get("best")
    if base:
        for result in results.values():
            result["vs_float32"] = round(result["best"] / base, 2)
    print(json.dumps({"size": args.size, "batch": 32, "levers": results}, indent=2))


if __name__ == "__main__":
    main()
