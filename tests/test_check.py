"""``inat-classifier check`` (``make check``), and ``compare`` with a real ``dvc exp`` name, on a tiny DVC
repository whose one stage writes evaluate's files from two params: photos it now gets right (``better``)
and wrong (``worse``) out of 200, 150 right at first. Seconds, not the real pipeline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inat_classifier.compare.check import TOLERANCE, judge
from inat_classifier.cli import main
from inat_classifier.compare.comparison import SplitComparison

STAGE = """\
import json, pathlib, yaml
params = yaml.safe_load(open("params.yaml"))
right = [params["worse"] <= i < 150 or 150 <= i < 150 + params["better"] for i in range(200)]
rows = [f"data/raw/test/{i:03d}.jpg,a,{'a' if hit else 'b'},0.9" for i, hit in enumerate(right)]
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("metrics/predictions_test.csv").write_text("\\n".join(["path,true,predicted,confidence", *rows]) + "\\n")
accuracy = sum(right) / 200
pathlib.Path("metrics/evaluate.json").write_text(json.dumps({"test": {"images": 200, "accuracy": accuracy}}))
pathlib.Path("models").mkdir(exist_ok=True)
pathlib.Path("models/model.bin").write_text(str(right))
"""


@pytest.fixture(autouse=True)
def tolerance(monkeypatch):
    """These scenarios sit either side of 0.05, whatever tolerance was measured across CPUs."""
    monkeypatch.setitem(TOLERANCE, "test", 0.05)


def run(root: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def dvc(root: Path, *args: str) -> str:
    return run(root, sys.executable, "-m", "dvc", *args)


def set_params(root: Path, **values: int) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({"better": 0, "worse": 0, **values}))


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("committed")
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "test@example.com")
    run(root, "git", "config", "user.name", "test")
    dvc(root, "init", "-q")
    (root / "stage.py").write_text(STAGE)
    set_params(root)
    stage = {
        "cmd": f'"{sys.executable}" stage.py',
        "deps": ["stage.py"],
        "params": ["better", "worse"],
        "metrics": [{"metrics/evaluate.json": {"cache": False}}],
        "outs": [{"metrics/predictions_test.csv": {"cache": False}}, "models/model.bin"],  # the model: cached
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": stage}}))
    dvc(root, "repro", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "the committed run")
    return root


@pytest.fixture
def repo(committed, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "clone"
    shutil.copytree(committed, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


def check(capsys) -> tuple[int, list[str], str]:
    status = main(["check"])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def reproduce(root: Path, **values: int) -> None:
    set_params(root, **values)
    dvc(root, "repro", "-q")


def test_identical_after_a_repro_that_changes_nothing(repo, capsys):
    dvc(repo, "repro", "-q", "--force")
    assert check(capsys) == (0, ["identical"], "")


def test_within_tolerance(repo, capsys):
    reproduce(repo, better=3, worse=2)  # 3 photos gained, 2 lost: +0.005
    status, lines, _ = check(capsys)
    assert status == 0 and lines[0] == "within tolerance"
    assert lines[1] == "  changed from HEAD: dvc.lock, metrics/evaluate.json, metrics/predictions_test.csv"
    assert lines[2] == (
        "  test: accuracy 0.7500 -> 0.7550 (+0.0050, tolerance 0.05); "
        "McNemar p = 1.000, no significant difference"
    )


def test_mcnemar_is_reported_but_the_tolerance_decides(repo, capsys):
    reproduce(repo, better=9)  # +0.045, 9 photos gained and none lost: p = 2 / 2**9, a real difference
    status, lines, _ = check(capsys)
    assert status == 0 and lines[0] == "within tolerance"
    assert lines[2].endswith("(+0.0450, tolerance 0.05); McNemar p = 0.004, B is better")


def test_differs_beyond_the_tolerance(repo, capsys):
    reproduce(repo, better=31, worse=20)  # +0.055, though McNemar finds no significant difference (p = 0.16)
    status, lines, _ = check(capsys)
    assert status == 1 and lines[0] == "differs"
    assert "(+0.0550, tolerance 0.05); McNemar p = 0.161, no significant difference" in lines[2]


def test_refuses_a_workspace_that_is_not_reproduced(repo, capsys):
    set_params(repo, better=3)
    assert check(capsys) == (
        2, [], "error: the workspace is not what dvc repro makes (evaluate changed): run make repro first\n"
    )  # fmt: skip


def test_judge_demands_the_same_splits():
    row = SplitComparison("test", 200, 0.75, 0.75, 0.0, -0.01, 0.01, 0, 0, 1.0, "no significant difference")
    head, workspace = {"test": {"accuracy": 0.75}, "val": {"accuracy": 0.7}}, {"test": {"accuracy": 0.75}}
    assert judge(head, workspace, [row]) == ("differs", ["evaluated splits: HEAD val, test; workspace test"])
    assert judge(workspace, workspace, [row])[0] == "within tolerance"


def test_compare_reads_a_real_dvc_experiment(repo, capsys):
    dvc(repo, "exp", "run", "-q", "-n", "more-right", "-S", "better=30")
    assert "refs/exps/" in run(repo, "git", "for-each-ref", "refs/exps/")
    assert main(["compare", "HEAD", "more-right"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("A: HEAD (") and "B: more-right (" in out
    test_row = next(line for line in out.splitlines() if line.startswith("test"))
    assert test_row.split()[1:5] == ["200", "0.750", "0.900", "+0.150"] and test_row.endswith("B is better")
