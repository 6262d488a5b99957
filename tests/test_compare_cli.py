"""``inat-classifier compare`` on a tiny git repository: revisions, the workspace, experiment refs, refusals."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from inat_classifier.cli import main

PHOTOS = 40


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def write_run(root: Path, right: dict[str, int], photos: dict[str, list[str]] | None = None) -> None:
    """evaluate's files for a run that gets the first ``right[split]`` photos of each split right."""
    metrics = {}
    for split in ("train", "val", "test"):
        lines = ["path,true,predicted,confidence"]
        if split in right:
            paths = (photos or {}).get(split) or [f"data/raw/{split}/{i:04d}.jpg" for i in range(PHOTOS)]
            lines += [f"{p},Sample a,{'Sample a' if i < right[split] else 'Sample b'},0.9" for i, p in enumerate(paths)]
            metrics[split] = {"images": len(paths), "accuracy": right[split] / len(paths)}
        (root / "metrics").mkdir(exist_ok=True)
        (root / f"metrics/predictions_{split}.csv").write_text("\n".join(lines) + "\n")
    (root / "metrics/evaluate.json").write_text(json.dumps({**metrics, "licenses": {"cc0": 1}}))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """HEAD~1: 30 of 40 right in each split; HEAD: 39 of 40 in train, the same in val and test."""
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "test@example.com")
    git(tmp_path, "config", "user.name", "test")
    write_run(tmp_path, {"train": 30, "val": 30, "test": 30})
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "A")
    write_run(tmp_path, {"train": 39, "val": 30, "test": 30})
    git(tmp_path, "commit", "-qam", "B")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def compare(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["compare", *args])
    out, err = capsys.readouterr()
    return status, out, err


def lines_by_split(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line.split()[0] in ("train", "val", "test")}


def test_compare_two_commits(repo, capsys):
    status, out, err = compare(capsys, "HEAD~1", "HEAD")
    assert status == 0 and err == ""
    head = git(repo, "rev-parse", "--short=7", "HEAD")
    assert out.splitlines()[0].endswith(f"B: HEAD ({head})")
    rows = lines_by_split(out)
    assert list(rows) == ["train", "val", "test"]
    # train: 9 photos only B gets right, none only A: p = 2 / 2**9
    assert rows["train"].split()[1:5] == ["40", "0.750", "0.975", "+0.225"]
    assert rows["train"].endswith("0.004  B is better")
    assert rows["test"].endswith("1.000  no significant difference")


def test_compare_with_the_workspace_as_json(repo, capsys):
    write_run(repo, {"train": 39, "test": 20})  # val not evaluated here; test worse
    status, out, _ = compare(capsys, "HEAD", "workspace", "--json")
    report = json.loads(out)
    assert status == 0 and report["b"] == "workspace"
    splits = {row["split"]: row for row in report["splits"]}
    assert list(splits) == ["train", "test"]
    assert splits["train"]["difference"] == 0 and splits["train"]["verdict"] == "no significant difference"
    assert (splits["test"]["only_a"], splits["test"]["only_b"], splits["test"]["verdict"]) == (10, 0, "A is better")
    assert report["notes"] == ["val: evaluated only by A, not compared"]


def test_refuses_runs_of_different_photos(repo, capsys):
    other = [f"data/raw/val/{i:04d}.jpg" for i in range(1, PHOTOS + 1)]
    write_run(repo, {"train": 39, "val": 30, "test": 30}, photos={"val": other})
    status, out, err = compare(capsys, "HEAD", "workspace")
    assert status == 2 and out == ""
    assert err == (
        "error: val: the runs scored different photos (1 only in A, 1 only in B, e.g. data/raw/val/0000.jpg); "
        "compare runs of the same subset\n"
    )


def test_refuses_a_run_without_per_image_predictions(repo, capsys):
    (repo / "metrics/predictions_val.csv").unlink()
    git(repo, "commit", "-qam", "an evaluate that wrote only test predictions")
    status, _, err = compare(capsys, "HEAD~1", "HEAD")
    head = git(repo, "rev-parse", "--short=7", "HEAD")
    assert status == 2
    assert err == (
        f"error: HEAD ({head}) has no per-image predictions for val (metrics/predictions_val.csv); "
        "rerun its evaluate stage\n"
    )


def test_refuses_predictions_without_the_needed_columns(repo, capsys):
    (repo / "metrics/predictions_test.csv").write_text("path,label\ndata/raw/test/0000.jpg,Sample a\n")
    status, _, err = compare(capsys, "HEAD", "workspace")
    assert status == 2 and err == "error: workspace: metrics/predictions_test.csv lacks the column(s) true, predicted\n"


@pytest.mark.parametrize("name", ["no-such-branch", "HEAD~5", "--all"])  # --all: a name, never a git option
def test_refuses_unknown_names(repo, capsys, name):
    status, _, err = compare(capsys, "HEAD", "--", name)
    assert status == 2 and err == f"error: '{name}' is neither a git revision, a dvc experiment nor 'workspace'\n"


def experiment_ref(baseline: str, name: str) -> str:
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def test_experiment_names_resolve_through_their_refs(repo, capsys):
    """DVC keeps an experiment's commit at refs/exps/<baseline[:2]>/<baseline[2:]>/<name> (a real one: test_check)."""
    head, first = git(repo, "rev-parse", "HEAD"), git(repo, "rev-parse", "HEAD~1")
    git(repo, "update-ref", experiment_ref(head, "lr-0.003"), first)
    status, out, _ = compare(capsys, "lr-0.003", "HEAD")
    assert status == 0 and out.startswith(f"A: lr-0.003 ({first[:7]})")
    assert lines_by_split(out)["train"].endswith("B is better")


def test_an_experiment_name_of_two_baselines(repo, capsys):
    head, first = git(repo, "rev-parse", "HEAD"), git(repo, "rev-parse", "HEAD~1")
    git(repo, "update-ref", experiment_ref(first, "sweep"), first)
    git(repo, "update-ref", experiment_ref("ab" * 20, "sweep"), head)
    status, _, err = compare(capsys, "sweep", "HEAD")
    assert status == 2
    baselines = ", ".join(sorted([first[:7], "abababa"]))
    assert err == f"error: experiment name 'sweep' is ambiguous: experiments of baselines {baselines} share it\n"
    git(repo, "update-ref", experiment_ref(head, "sweep"), first)  # the one based on HEAD wins, as in DVC
    status, out, _ = compare(capsys, "sweep", "HEAD")
    assert status == 0 and out.startswith(f"A: sweep ({first[:7]})")
