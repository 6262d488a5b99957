"""Training speed at the study's image size on a seed-scale sample, printed as JSON.

Usage: python benchmarks/speed.py [--size 224] [--head-epochs 20] [--finetune-epochs 2] [--no-peer]
(`make bench` runs it after installing tf-keras for the peer.)

On a fresh copy of the repository with a generated sample of the study's seed scale (520 train /
349 test images over 4 classes) and a local weights file standing in for ImageNet weights (random
values: the same cost, and the same settings `auto` picks for pretrained weights), it reports:
- images/s of the input pipeline alone, the model alone (one fixed batch, no tf.data) and the real
  training step (fit on the pipeline), for each phase: the frozen phase end to end, the frozen
  phase on cached features, fine-tuning at the defaults and with the whole base unfrozen;
- wall seconds of `dvc repro` and of each stage;
- the study's approach (tf-keras ImageDataGenerator reading files every epoch) on the same data,
  run in its own process, and the ratios the speed issue asks for;
- like for like (benchmarks/like_for_like.py): fine-tuning epochs of both doing the same work, in
  alternation, per numerics setting: oneDNN as this CPU picks it, with bfloat16 math
  (`train.cpu_bf16_math`), and oneDNN off (as on CPUs without AVX-512 VNNI/BF16 or AMX).

`--like-for-like-only` skips everything else (a few minutes instead of half an hour); `--settings`
names the numerics settings to time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import statistics
import tempfile
import time
from pathlib import Path

from pipeline import REPO, copy_repo, machine, repo_env, timed_repro
from reproducibility import run_stage

SEED_SCALE = ["download.sample.train_images=143", "download.sample.test_images=96"]  # 520 / 349 images
WEIGHTS = "weights/benchmark.weights.h5"
# name -> (environment, unfreeze settings): the study's recipe (all) everywhere, the default (top 20) once
LIKE_FOR_LIKE = {
    "onednn_as_picked": ({}, ["all", "20"]),
    "onednn_no_fusion": ({"TF_XLA_FLAGS": ""}, ["all", "20"]),  # train.fuse_elementwise: false on this project's side
    "onednn_bf16_math": ({"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}, ["all"]),
    "onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, ["all"]),
}


def per_second(step, images: int, seconds: float = 4.0, rounds: int = 3) -> float:
    """Images per second of ``step`` after one warm-up call (graph building): the best of ``rounds``
    windows of about ``seconds`` each, since a shared machine only ever makes a window slower."""
    step()
    best = 0.0
    for _ in range(rounds):
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < seconds:
            step()
            calls += 1
        best = max(best, images * calls / (time.perf_counter() - start))
    return round(best, 1)


def pipeline_rate(batches) -> float:
    """Images/s of one epoch of the input pipeline with nothing consuming it (after a warm-up epoch)."""

    def epoch(number: int) -> int:
        batches.set_epoch(number)
        return sum(len(labels) for _, labels in batches.dataset)

    epoch(0)
    start = time.perf_counter()
    count = epoch(1)
    return round(count / (time.perf_counter() - start), 1)


def paired_rates(model, train, val, images, labels, count: int, rounds: int = 5) -> dict:
    """The model alone and the real training step, measured in alternation on the same number of images.

    Each round runs ``count`` images of ``train_on_batch`` on one fixed batch (no tf.data), then one
    epoch of a real fit on the pipeline; round 0 builds the graphs and is dropped. A shared machine's
    slow spells hit neighbouring measurements alike, so the step's share of the model-alone rate is
    the median of the per-round ratios; the rates are each the best round.
    """
    import keras

    from inat_classifier.train.training import EpochData

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.trained = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.train_seconds, self.epoch_seconds = self.trained - self.began, time.perf_counter() - self.began

    clock, calls = Clock(), -(-count // len(labels))
    alone, stepped, epochs = [], [], []
    for round_ in range(rounds + 1):
        start = time.perf_counter()
        for _ in range(calls):
            model.train_on_batch(images, labels)
        alone.append(calls * len(labels) / (time.perf_counter() - start))
        model.fit(train.dataset, validation_data=val.dataset, initial_epoch=round_, epochs=round_ + 1,
                  callbacks=[EpochData(train), clock], verbose=0)
        stepped.append(count / clock.train_seconds)
        epochs.append(clock.epoch_seconds)
    alone, stepped, epochs = alone[1:], stepped[1:], epochs[1:]
    return {"model": round(max(alone), 1), "training_step": round(max(stepped), 1),
            "step_share_of_model": round(statistics.median(s / a for s, a in zip(stepped, alone)), 3),
            "epoch_seconds": round(min(epochs), 1)}


def measure_phases(root: Path) -> dict:
    """All in-process figures, on the copy's decoded train and val splits."""
    os.chdir(root)
    import tensorflow as tf

    from inat_classifier.data.classnames import subset_classes
    from inat_classifier.train.dataset import batches, load_split
    from inat_classifier.train.features import FrozenBaseHead, base_features, feature_batches, head_model
    from inat_classifier.train.model import build_classifier, unfreeze
    from inat_classifier.train.recipe import batchnorm_trains, unfrozen_layers
    from inat_classifier.params import load_params
    from inat_classifier.train.training import compile_model, make_deterministic, use_device

    params = load_params()
    jit_compile = use_device(params.train)
    make_deterministic(params.seed, ops=not jit_compile)
    classes, size, batch = subset_classes(), params.data.image_size, params.data.batch_size
    train, val = load_split("train", params.data), load_split("val", params.data)
    images = tf.constant(train.pixels[:batch].astype("float32"))
    labels = tf.constant(train.labels[:batch])
    augmented = batches(train, params.data, params.seed, shuffle=True, augment=params.augment)
    plain_val = batches(val, params.data, params.seed, shuffle=False)
    image_pipeline = pipeline_rate(augmented)

    def rates(model, train_batches, val_batches, learning_rate=1e-4, fixed_batch=images) -> dict:
        compile_model(model, learning_rate, jit_compile)
        return paired_rates(model, train_batches, val_batches, fixed_batch, labels, len(train))

    def fresh():
        return build_classifier(params.model, len(classes), size)

    out = {}
    frozen = FrozenBaseHead(fresh())
    out["frozen_end_to_end"] = {"pipeline": image_pipeline, **rates(frozen, augmented, plain_val)}

    classifier = fresh()
    base = classifier.get_layer("efficientnetb0")
    extraction = per_second(lambda: base.predict_on_batch(images), batch)
    views = params.train_head.feature_cache or 1
    features = base_features(classifier, train, params.data, params.seed, params.augment, views)
    cached_train = feature_batches(features, train.labels, params.data, params.seed, shuffle=True)
    cached_val = feature_batches(base_features(classifier, val, params.data, params.seed, params.augment, 1), val.labels, params.data, params.seed, shuffle=False)
    head = head_model(classifier)
    out["frozen_feature_cache"] = {
        "pipeline": pipeline_rate(cached_train),
        **rates(head, cached_train, cached_val, 1e-3, tf.constant(features[0][:batch])),
        "feature_extraction": extraction,
        "views": views,
    }

    config = params.finetune
    settings = {"finetune_default": unfrozen_layers(config, params.model), "finetune_all": "all"}
    for name, layers in settings.items():
        tuned = unfreeze(fresh(), layers, batchnorm_trains(config, params.model))
        out[name] = {"unfrozen_layers": layers, "pipeline": image_pipeline, **rates(tuned, augmented, plain_val)}
    out["train_images"] = int(len(train))
    return out


def run_peer(root: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(REPO / "benchmarks" / "imagedatagenerator_peer.py"), "data/subset",
               "--size", str(args.size), "--head-epochs", str(args.head_epochs),
               "--finetune-epochs", str(args.finetune_epochs)]
    done = subprocess.run(command, cwd=root, env=repo_env(), capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:] + "\nthe ImageDataGenerator peer failed (is tf-keras installed? make bench)")
    return json.loads(done.stdout.split("RESULT ", 1)[1])


def like_for_like(root: Path, rounds: int, settings: list[str] | tuple[str, ...] = tuple(LIKE_FOR_LIKE)) -> dict:
    """One process per numerics setting (oneDNN reads its settings once), each alternating both sides."""
    results = {}
    for name in settings:
        env, layers = LIKE_FOR_LIKE[name]
        command = [sys.executable, str(REPO / "benchmarks" / "like_for_like.py"), "--rounds", str(rounds),
                   "--weights", WEIGHTS, "--unfreeze", *layers]
        done = subprocess.run(command, cwd=root, env={**repo_env(), "PYTHONPATH": str(REPO / "src"), **env},
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-3000:] + f"\nlike_for_like.py failed ({name}; is tf-keras installed? make bench)")
        results[name] = json.loads(done.stdout.split("RESULT ", 1)[1])
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--head-epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true", help="skip the tf-keras ImageDataGenerator peer")
    parser.add_argument("--like-for-like-only", action="store_true", help="only the alternating fine-tuning epochs")
    parser.add_argument("--rounds", type=int, default=2, help="like for like: measured epochs of each side")
    parser.add_argument("--settings", nargs="+", choices=list(LIKE_FOR_LIKE), default=list(LIKE_FOR_LIKE),
                        help="like for like: these numerics settings only")
    args = parser.parse_args()
    overrides = [*SEED_SCALE, f"data.image_size={args.size}", f"train_head.epochs={args.head_epochs}",
                 f"finetune.epochs={args.finetune_epochs}", f"model.weights={WEIGHTS}"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        copy_repo(root, overrides)
        subprocess.run([sys.executable, "-c", "import keras; keras.applications.EfficientNetB0("
                        f"include_top=False, weights=None, pooling='avg', input_shape=({args.size}, {args.size}, 3))"
                        f".save_weights('{WEIGHTS}')"], cwd=root, env=repo_env(), check=True, capture_output=True)
        if args.like_for_like_only:
            for stage in ("download", "subset"):
                run_stage(root, stage, {**repo_env(), "PYTHONPATH": str(REPO / "src")})
            print(json.dumps({"benchmark": f"fine-tuning epochs like for like, {args.size} px, seed-scale sample",
                              "machine": machine(), "settings": {"overrides": overrides},
                              "like_for_like": like_for_like(root, args.rounds, args.settings)}, indent=2))
            return
        total, stages = timed_repro(root)
        evaluated = json.loads((root / "metrics/evaluate.json").read_text())
        peer = None if args.no_peer else run_peer(root, args)
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
            phases = measure_phases(root)
        matched = like_for_like(root, args.rounds, args.settings)
    result = {
        "benchmark": "training speed at the study's image size, seed-scale sample",
        "machine": machine(),
        "settings": {"overrides": overrides, "note": "weights: a local random file; auto settings as for ImageNet"},
        "images_per_second": phases,
        "dvc_repro": {"seconds_total": round(total, 1), "seconds_per_stage": stages,
                      "test_images": evaluated["test"]["images"]},
        "imagedatagenerator_peer": peer,
        "like_for_like": matched,
    }
    if peer:
        ours = phases["finetune_default"]
        result["checks"] = {
            "frozen_phase_speedup": round(peer["frozen_phase_wall_seconds"] / stages["train_head"], 2),
            "finetune_epoch_seconds_ours_vs_peer": [ours["epoch_seconds"], peer["finetune_epoch_seconds"][-1]],
            "finetune_training_step_share_of_model_alone": ours["step_share_of_model"],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
