"""How far the default run's test accuracy moves with the seed and with the CPU's numerics.

TensorFlow picks its CPU kernels per processor: oneDNN's where the CPU has AVX-512 VNNI/BF16 or AMX,
Eigen's elsewhere, and oneDNN's again limited to AVX2 on older CPUs. Each rounds differently, and
training amplifies the difference. This runs the whole pipeline (stage scripts, no DVC) in a copy
of the working tree for every seed and every numerics path this CPU can imitate, and prints each
run's accuracies and their mean, standard deviation and range as JSON (docs/reproducibility.md).

    python benchmarks/reproducibility.py [--seeds 42 1 2 3 4] [--set finetune.epochs=16 ...] [--tta 4]

``--tta N`` scores every trained model once more with ``evaluate.tta: N`` (the evaluate stage alone),
so one sweep measures whether test-time augmentation narrows the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline import REPO, copy_repo, set_param

# name -> environment: oneDNN forced on (current servers), off (Eigen's kernels), on but AVX2 only (older CPUs)
NUMERICS = {
    "onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"},
    "no-onednn": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "onednn-avx2": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
DATA_STAGES, TRAINING_STAGES = ("download", "subset"), ("train_head", "finetune", "evaluate")
SPLITS = ("train", "val", "test")


def without_numerics(env) -> dict[str, str]:
    """``env`` less the variables NUMERICS sets, so each path gets only its own."""
    return {key: value for key, value in env.items() if key not in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")}


def run_stage(root: Path, stage: str, env: dict[str, str]) -> tuple[float, int]:
    """Run ``stages/<stage>.py``; its wall seconds and peak resident memory (MB, the process's own)."""
    started = time.perf_counter()
    with open(root / f"{stage}.log", "w") as log:
        process = subprocess.Popen([sys.executable, f"stages/{stage}.py"], cwd=root, env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"{stage} failed in {root}:\n{(root / f'{stage}.log').read_text()[-3000:]}")
    return round(time.perf_counter() - started, 1), usage.ru_maxrss // 1024


def run_stages(root: Path, stages: tuple[str, ...], env: dict[str, str]) -> float:
    return round(sum(run_stage(root, stage, env)[0] for stage in stages), 1)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "runs": len(values),
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def scores_with_tta(root: Path, tta: int, env: dict[str, str]) -> dict[str, float]:
    """Evaluate the trained model again with ``evaluate.tta: tta``; params.yaml is put back afterwards."""
    params_file = root / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    set_param(params, f"evaluate.tta={tta}")
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        run_stage(root, "evaluate", env)
    finally:
        params_file.write_text(original)
    scores = json.loads((root / "metrics" / "evaluate.json").read_text())
    return {f"{split}_accuracy_tta{tta}": scores[split]["accuracy"] for split in SPLITS if split in scores}


def measure(seeds: list[int], numerics: list[str], overrides: list[str], tta: int | None = None) -> dict:
    """Every seed under every numerics path, in a copy of the working tree per seed."""
    base_env = {**without_numerics(os.environ), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO / "src")}
    runs = []
    with tempfile.TemporaryDirectory(prefix="reproducibility.") as scratch:
        for seed in seeds:
            root = Path(scratch) / f"seed-{seed}"
            copy_repo(root, [*overrides, f"seed={seed}"])
            run_stages(root, DATA_STAGES, base_env)
            for name in numerics:
                seconds = run_stages(root, TRAINING_STAGES, {**base_env, **NUMERICS[name]})
                scores = json.loads((root / "metrics" / "evaluate.json").read_text())
                run = {"seed": seed, "numerics": name, "seconds": seconds}
                run.update({f"{split}_accuracy": scores[split]["accuracy"] for split in SPLITS if split in scores})
                run["test_interval"] = [scores["test"]["accuracy_ci_low"], scores["test"]["accuracy_ci_high"]]
                if tta:
                    run.update(scores_with_tta(root, tta, {**base_env, **NUMERICS[name]}))
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "src", "stages", "params.yaml"],
                                cwd=REPO, capture_output=True, text=True).stdout.strip())
    return {"commit": commit + ("+changes" if dirty else ""), "overrides": overrides, "tta": tta, "runs": runs}


def committed_interval() -> list[float]:
    """The committed run's 95% interval of test accuracy: the band every run should land in."""
    test = json.loads((REPO / "metrics" / "evaluate.json").read_text())["test"]
    return [test["accuracy_ci_low"], test["accuracy_ci_high"]]


def combine(parts: list[dict]) -> dict:
    """One report of runs made by several invocations (one recipe: same commit and overrides)."""
    recipes = {(part["commit"], tuple(part["overrides"]), part.get("tta")) for part in parts}
    if len(recipes) > 1:
        raise SystemExit(f"--combine: the reports come from different recipes (commit, overrides, tta): {sorted(recipes)}")
    runs = [run for part in parts for run in part["runs"]]
    low, high = committed_interval()
    test = [run["test_accuracy"] for run in runs]
    tta = parts[0].get("tta")
    with_tta = [run[f"test_accuracy_tta{tta}"] for run in runs if f"test_accuracy_tta{tta}" in run]
    return {
        **parts[0],
        "runs": runs,
        "test_accuracy": summary(test),
        "committed_interval": [low, high],
        "inside_committed_interval": sum(low <= value <= high for value in test),
        **({f"test_accuracy_tta{tta}": summary(with_tta),
            f"inside_committed_interval_tta{tta}": sum(low <= value <= high for value in with_tta)} if with_tta else {}),
        "test_accuracy_by_numerics": {
            name: summary([run["test_accuracy"] for run in runs if run["numerics"] == name])
            for name in dict.fromkeys(run["numerics"] for run in runs)
        },
        "test_accuracy_by_seed": {
            seed: summary([run["test_accuracy"] for run in runs if run["seed"] == seed])
            for seed in dict.fromkeys(run["seed"] for run in runs)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    parser.add_argument("--numerics", nargs="+", choices=list(NUMERICS), default=list(NUMERICS))
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params.yaml overrides for every run, e.g. finetune.epochs=16")
    parser.add_argument("--tta", type=int, metavar="N", help="also score every model with evaluate.tta: N")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="REPORT",
                        help="run nothing: summarise the runs of earlier reports of this script as one")
    args = parser.parse_args()
    parts = ([json.loads(path.read_text()) for path in args.combine] if args.combine
             else [measure(args.seeds, args.numerics, args.overrides, args.tta)])
    print(json.dumps(combine(parts), indent=2))


if __name__ == "__main__":
    main()
