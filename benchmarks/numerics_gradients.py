"""Do the CPU numerics paths compute the same gradients? One batch, one random model, three paths.

A run that trains less far on one path could mean a kernel of that path computes a worse gradient,
or only that rounding sent the run elsewhere. This builds the same randomly initialised
EfficientNetB0 with a softmax head in a child process per path (oneDNN on, off, on but AVX2 only;
as benchmarks/reproducibility.py), computes the loss and every variable's gradient on one fixed
batch in training mode, and prints per pair of paths the loss difference and the relative gradient
differences (median and largest over variables) as JSON (docs/reproducibility.md).

    python benchmarks/numerics_gradients.py [--image-size 48]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from reproducibility import NUMERICS, without_numerics


def gradients(out: Path, image_size: int) -> None:
    """In this process's numerics: the loss and gradients of one batch, saved to ``out`` (.npz)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(image_size, image_size, 3),
                                             pooling="avg")
    model = keras.Model(base.input, keras.layers.Dense(4, activation="softmax")(base.output))
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (32, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, 4, 32)
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(labels, model(images, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    np.savez(out, loss=loss.numpy(), **{f"g{i}": g.numpy() for i, g in enumerate(grads)})


def compare(a: np.lib.npyio.NpzFile, b: np.lib.npyio.NpzFile) -> dict:
    names = [name for name in a.files if name.startswith("g")]
    norms = np.array([np.linalg.norm(a[n]) for n in names])
    relative = np.array([np.linalg.norm(a[n] - b[n]) for n in names]) / np.maximum(norms, 1e-30)
    above = relative > 1e-3  # a large relative difference matters only where the gradient itself does
    return {"loss_difference": float(abs(a["loss"] - b["loss"])),
            "gradient_relative_difference_median": float(np.median(relative)),
            "gradient_relative_difference_max": float(relative.max()),
            "variables_above_1e-3": int(above.sum()), "variables": len(names),
            "gradient_norm_median": float(np.median(norms)),
            "gradient_norm_max_of_those_above_1e-3": float(norms[above].max()) if above.any() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        gradients(args.child, args.image_size)
        return
    env = {**without_numerics(os.environ), "TF_CPP_MIN_LOG_LEVEL": "2"}

    def in_child(path: Path, numerics: str) -> np.lib.npyio.NpzFile:
        subprocess.run([sys.executable, __file__, "--image-size", str(args.image_size), "--child", str(path)],
                       env={**env, **NUMERICS[numerics]}, check=True, capture_output=True)
        return np.load(path)

    with tempfile.TemporaryDirectory() as tmp:
        saved = {name: in_child(Path(tmp) / f"{name}.npz", name) for name in NUMERICS}
        pairs = {f"{a} vs {b}": compare(saved[a], saved[b]) for a, b in itertools.combinations(saved, 2)}
        # the same path twice: how far apart "the same" is
        pairs["onednn vs onednn again"] = compare(saved["onednn"], in_child(Path(tmp) / "again.npz", "onednn"))
    print(json.dumps({"benchmark": "gradients of one batch per numerics path", "image_size": args.image_size,
                      "pairs": pairs}, indent=2))


if __name__ == "__main__":
    main()
