"""Peak resident memory of whole-base fine-tuning steps at 224 px, per piece size, printed as JSON.

    python benchmarks/step_memory.py [--size 224] [--pieces 8 16]

The finetune stage on a CPU splits each batch of 32 into pieces whose activations fit
STEP_BUDGET (train/dataset.py), at STEP_BYTES_PER_PIXEL an image pixel, less
TRAINING_BATCHNORM_BYTES where BatchNormalization trains. This measures those figures: each setting
in its own process, EfficientNetB0 (random weights) with its whole base trainable,
BatchNormalization frozen (the study's recipe with pretrained weights) or training (the default
with random weights), two epochs of one batch of 32 random images in pieces of N, gradients summed
as the stage does. The difference between two piece sizes, divided by the images between
them, is what one more image in a piece holds; the difference between the two modes at one piece
size, what training BatchNormalization holds besides.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys


def one(size: int, piece: int, batchnorm: str) -> dict:
    """Runs in the child process: peak RSS of fitting one batch in pieces of ``piece``."""
    import numpy as np

    from inat_classifier.params import parse_params
    from inat_classifier.train.model import build_classifier, unfreeze
    from inat_classifier.train.training import compile_model

    model = build_classifier(parse_params({"model": {"weights": None}}).model, 4, size)
    model = unfreeze(model, "all", batchnorm_trains=batchnorm == "train")
    compile_model(model, 1e-4, accumulation=32 // piece)
    images = np.random.default_rng(0).uniform(0, 255, (32, size, size, 3)).astype("float32")
    labels = np.arange(32) % 4
    with open("/proc/self/status") as status:  # Linux: the resident memory now, before the steps
        before = int(status.read().split("VmRSS:")[1].split()[0]) // 1024
    model.fit(images, labels, batch_size=piece, epochs=2, verbose=0, shuffle=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return {"piece": piece, "batchnorm": batchnorm, "rss_before_fit_mb": before, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--pieces", type=int, nargs=2, default=[8, 16], help="two piece sizes (divisors of 32)")
    parser.add_argument("--child", nargs=2, metavar=("PIECE", "BATCHNORM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    small, large = args.pieces
    if not (0 < small < large and 32 % small == 0 and 32 % large == 0):
        parser.error(f"--pieces {small} {large}: two growing divisors of 32, e.g. 8 16")
    if args.child:
        print("RESULT " + json.dumps(one(args.size, int(args.child[0]), args.child[1])))
        return
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    runs, per_image = [], {}
    for batchnorm in ("frozen", "train"):
        peaks = []
        for piece in args.pieces:
            done = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--child", str(piece), batchnorm],
                                  env=env, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.split("RESULT ", 1)[1]))
            peaks.append(runs[-1]["peak_mb"])
        extra = args.pieces[1] - args.pieces[0]
        per_image[batchnorm] = {"mb_per_image": round((peaks[1] - peaks[0]) / extra, 1),
                                "bytes_per_pixel": round((peaks[1] - peaks[0]) * 2**20 / extra / args.size**2)}
    frozen, trains = ([run["peak_mb"] for run in runs if run["batchnorm"] == mode] for mode in ("frozen", "train"))
    print(json.dumps({"benchmark": f"whole-base fine-tuning step memory, {args.size} px", "runs": runs,
                      "one_more_image_in_a_piece": per_image,
                      "training_batchnorm_holds_more_mb": [b - a for a, b in zip(frozen, trains)]}, indent=2))


if __name__ == "__main__":
    main()
