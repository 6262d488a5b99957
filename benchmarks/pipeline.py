"""Wall time of `dvc repro` on a fresh copy of this repository, printed as JSON.

Usage: python benchmarks/pipeline.py [-S key=value ...]
Copies the working tree's files (those git tracks or does not ignore) to a temporary directory (no
DVC cache, no run-cache), runs the whole pipeline with the committed params (overridden by -S like `dvc exp run`), and reports seconds per
stage and in total, the test accuracy, and whether dvc.lock and metrics match the committed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPARED = ("dvc.lock", "metrics/evaluate.json", "metrics/per_class_test.csv", "dvclive/finetune/metrics.json")


def set_param(params: dict, assignment: str) -> None:
    key, _, value = assignment.partition("=")
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def repo_env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def copy_repo(root: Path, overrides: list[str]) -> None:
    """The working tree's files that git would see (tracked or not ignored), as a fresh git repo."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    for name in listed.splitlines():
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    if overrides:
        params = yaml.safe_load((root / "params.yaml").read_text())
        for assignment in overrides:
            set_param(params, assignment)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=benchmark", "-c", "user.email=benchmark@localhost", "commit", "-qm",
                    "benchmark copy"], cwd=root, check=True)  # dvclive wants a commit to compare with


def timed_repro(root: Path) -> tuple[float, dict[str, float]]:
    """Seconds of `dvc repro` in ``root``, in total and per stage (from the lines DVC prints)."""
    start = time.perf_counter()
    process = subprocess.Popen(["dvc", "repro"], cwd=root, env=repo_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    stages, current, began, lines = {}, None, start, []
    for line in process.stdout:
        lines.append(line)
        match = re.search(r"Running stage '([^']+)'", line)
        if match:
            now = time.perf_counter()
            if current:
                stages[current] = round(now - began, 1)
            current, began = match.group(1), now
    process.wait()
    total = time.perf_counter() - start
    if current:
        stages[current] = round(time.perf_counter() - began, 1)
    if process.returncode:
        sys.exit("".join(lines[-40:]) + f"\ndvc repro failed with exit code {process.returncode}")
    return total, stages


def machine() -> dict:
    """The CPU as TensorFlow's kernel choice sees it: its model and whether it multiplies bfloat16 natively."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", info, re.M) or re.match("()", "")).group(1).split())
    return {"cpus": os.cpu_count(), "processor": model.group(1) if model else platform.processor() or platform.machine(),
            "bfloat16_flags": sorted(flags & {"avx512_bf16", "amx_bf16"}), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        copy_repo(root, args.overrides)
        total, stages = timed_repro(root)
        metrics = json.loads((root / "metrics/evaluate.json").read_text())
        identical = {name: (root / name).read_bytes() == (REPO / name).read_bytes()
                     for name in COMPARED if (REPO / name).exists()}
    print(json.dumps({
        "benchmark": "dvc repro on a fresh copy",
        "machine": machine(),
        "overrides": args.overrides,
        "seconds_total": round(total, 1),
        "seconds_per_stage": stages,
        "test_accuracy": metrics.get("test", {}).get("accuracy"),
        "identical_to_committed": identical if not args.overrides else None,
    }, indent=2))


if __name__ == "__main__":
    main()
