"""What each recipe option that is off by default does to test accuracy and time on the offline sample.

In one copy of the working tree: the data stages and the default run first, then each option on its
own, rerunning only the stages its params reach (as `dvc exp run -S` would) from the default's
models. Prints JSON: per option the test accuracy with its 95% interval, the difference from the
default, and the seconds of the training stages it ran (docs/recipe-options.md). One seed on one
machine: a difference well inside the intervals is not evidence of anything.

    python benchmarks/recipe_options.py [--only mixup cutmix] [--set seed=1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from pipeline import REPO, copy_repo, set_param
from reproducibility import DATA_STAGES, run_stage

OPTIONS = {  # name -> params set; fine-tuning options are set for that phase, where most epochs are
    "warmup": ["finetune.warmup_epochs=3"],
    "label_smoothing": ["finetune.label_smoothing=0.1"],
    "weight_decay": ["finetune.weight_decay=0.004"],
    "use_ema": ["finetune.use_ema=true"],
    "unfreeze_block6": ["finetune.unfreeze=block6"],
    "randaugment": ["augment.randaugment_ops=2"],
    "mixup": ["finetune.mixup=0.2"],
    "cutmix": ["finetune.cutmix=1.0"],
    "tta": ["evaluate.tta=4"],
    "cpu_bf16_math": ["train.cpu_bf16_math=true"],
}
FIRST_STAGE = {"train": "train_head", "augment": "train_head", "train_head": "train_head", "finetune": "finetune", "evaluate": "evaluate"}
TRAINING = ("train_head", "finetune", "evaluate")
KEPT = ("models", "metrics", "dvclive")  # the default run's outputs, restored before each option


def stages_for(assignments: list[str]) -> tuple[str, ...]:
    first = min(TRAINING.index(FIRST_STAGE[assignment.split(".")[0]]) for assignment in assignments)
    return TRAINING[first:]


def result(root: Path, seconds: dict[str, float]) -> dict:
    test = json.loads((root / "metrics" / "evaluate.json").read_text())["test"]
    return {"test_accuracy": test["accuracy"], "test_interval": [test["accuracy_ci_low"], test["accuracy_ci_high"]],
            "seconds": seconds}


def run_option(root: Path, saved: Path, assignments: list[str], env: dict[str, str]) -> dict:
    params_file = root / "params.yaml"
    default = params_file.read_text()
    params = yaml.safe_load(default)
    for assignment in assignments:
        set_param(params, assignment)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        return result(root, {stage: run_stage(root, stage, env)[0] for stage in stages_for(assignments)})
    finally:
        params_file.write_text(default)
        for name in KEPT:
            shutil.rmtree(root / name, ignore_errors=True)
            shutil.copytree(saved / name, root / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(OPTIONS), default=list(OPTIONS))
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params.yaml overrides for every run, the default's included")
    args = parser.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO / "src")}
    with tempfile.TemporaryDirectory(prefix="recipe-options.") as scratch:
        root, saved = Path(scratch) / "repo", Path(scratch) / "default"
        copy_repo(root, args.overrides)
        for stage in DATA_STAGES:
            run_stage(root, stage, env)
        runs = {"default": result(root, {stage: run_stage(root, stage, env)[0] for stage in TRAINING})}
        print(json.dumps({"default": runs["default"]}), file=sys.stderr, flush=True)
        for name in KEPT:
            shutil.copytree(root / name, saved / name)
        for option in args.only:
            runs[option] = {"set": OPTIONS[option], **run_option(root, saved, OPTIONS[option], env)}
            runs[option]["difference"] = round(runs[option]["test_accuracy"] - runs["default"]["test_accuracy"], 4)
            print(json.dumps({option: runs[option]}), file=sys.stderr, flush=True)
    print(json.dumps({"overrides": args.overrides, "numerics": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
                      "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
