"""``make check``: does the workspace, after ``make repro``, reproduce the committed run (HEAD)?

``identical`` when every output DVC leaves to git and ``dvc.lock`` equal HEAD's and ``dvc status`` is
clean (so the cached outputs match the lock, hence HEAD's hashes); else ``within tolerance`` when each
split's accuracy moved by at most its tolerance (McNemar's verdict on the same photos is shown
beside it); else ``differs``. Another CPU family or thread count rounds floats
differently, so training on another machine need not give the same bytes, only the same results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from .comparison import (
    DifferentPhotos,
    SplitComparison,
    compare_runs,
    evaluated_splits,
    load_metrics,
)
from ..errors import UserError
from .revisions import WORKSPACE, Revision, git, resolve

# How far each split's accuracy may stray from the committed run's (inclusive) when another CPU's
# kernels round differently: wider than the moves measured over three numerics paths for the
# committed seed (docs/reproducibility.md); one of the 88 validation photos is 0.011.
TOLERANCE = {"train": 0.05, "val": 0.15, "test": 0.05}
IDENTICAL, WITHIN_TOLERANCE, DIFFERS = "identical", "within tolerance", "differs"
SLACK = 1e-9  # float rounding of differences of 6-decimal metrics, so a tolerance is inclusive


def git_outputs(root: Path) -> list[str]:
    """``dvc.lock`` and every output, metric and plot file of dvc.yaml's stages with ``cache: false``
    (DVC leaves those to git, so git tells whether they changed)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text()).get("stages", {})
    paths = ["dvc.lock"]
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                if isinstance(entry, dict):
                    paths += [path for path, options in entry.items() if (options or {}).get("cache") is False]
    return paths


def changed_files(root: Path, paths: list[str]) -> list[str]:
    """Those of ``paths`` that differ from HEAD: modified, staged, deleted or new."""
    status = git(root, "status", "--porcelain", "--untracked-files=all", "--no-renames", "--", *paths)
    if status.returncode:
        raise UserError(f"git status failed: {status.stderr.decode().strip()}")
    return [line[3:] for line in status.stdout.decode().splitlines()]


def stale_stages(root: Path) -> list[str]:
    """Stages whose outputs do not match dvc.lock (``dvc status``); empty after ``dvc repro``."""
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True, check=False
    )
    if status.returncode:
        last = (status.stderr.strip() or status.stdout.strip()).splitlines()[-1:]
        raise UserError(f"dvc status failed: {last[0] if last else f'exit status {status.returncode}'}")
    return sorted(json.loads(status.stdout or "{}"))


def judge(head: dict, workspace: dict, comparisons: list[SplitComparison]) -> tuple[str, list[str]]:
    """``within tolerance`` or ``differs``, with one line per split: each headline metric's change next
    to its tolerance, and McNemar's verdict on the same photos."""
    splits, compared = evaluated_splits(head), {row.split: row for row in comparisons}
    if splits != evaluated_splits(workspace):
        reproduced = ", ".join(evaluated_splits(workspace))
        return DIFFERS, [f"evaluated splits: HEAD {', '.join(splits)}; workspace {reproduced}"]
    within, lines = True, []
    for split in splits:
        if "accuracy" not in head[split] or "accuracy" not in workspace[split]:
            raise UserError(f"{split}.accuracy is missing from HEAD's or the workspace's metrics/evaluate.json")
        before, after, tolerance = head[split]["accuracy"], workspace[split]["accuracy"], TOLERANCE[split]
        within &= abs(after - before) <= tolerance + SLACK
        row = compared[split]  # said, not judged: two CPUs' models may truly differ, within the tolerance
        lines.append(f"{split}: accuracy {before:.4f} -> {after:.4f} ({after - before:+.4f}, tolerance {tolerance}); "
                     f"McNemar p = {row.p_value:.3f}, {row.verdict}")
    return (WITHIN_TOLERANCE if within else DIFFERS), lines


def check(root: Path) -> tuple[str, list[str]]:
    """The verdict on the workspace at ``root`` and the lines that explain it."""
    stale = stale_stages(root)
    if stale:
        raise UserError(f"the workspace is not what dvc repro makes ({', '.join(stale)} changed): run make repro first")
    changed = changed_files(root, git_outputs(root))
    if not changed:
        return IDENTICAL, []
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    head, workspace = resolve("HEAD", root), Revision(WORKSPACE, None, root)
    try:
        comparisons, _ = compare_runs(head, workspace)
    except DifferentPhotos as exc:  # another subset: no tolerance applies
        return DIFFERS, [f"changed from HEAD: {shown}", str(exc)]
    verdict, lines = judge(load_metrics(head), load_metrics(workspace), comparisons)
    return verdict, [f"changed from HEAD: {shown}", *lines]
