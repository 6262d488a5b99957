"""The whole DVC pipeline in a temporary copy of the repository, with tiny settings.

One module-scoped repro serves every check, since each dvc run imports TensorFlow and builds graphs.
Checks marked ``workflow`` test DVC's side (experiments, plots, the queue), which TensorFlow's numerics
do not touch: `make test` runs them under one numerics path only.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import Repo, copy_repository
from inat_classifier.data.classnames import read_class_names

pytestmark = pytest.mark.pipeline

TINY = {
    "download": {"sample": {"train_images": 14, "test_images": 6, "min_side": 40, "max_side": 64}},
    "data": {"image_size": 32, "batch_size": 8},
    "train_head": {"epochs": 2},
    "finetune": {"epochs": 2, "learning_rate": 0.001},
}


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Repo:
    repo = copy_repository(tmp_path_factory.mktemp("repo"), TINY)
    repo.first_output = repo.dvc("repro")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "first run")
    return repo


def test_repro_runs_every_stage_and_writes_the_contract_outputs(repo):
    assert stages_run(repo.first_output) == ["download", "subset", "train_head", "finetune", "evaluate", "report"]
    metrics = repo.json("metrics/evaluate.json")
    assert set(metrics) == {"train", "val", "test", "licenses"}
    assert metrics["licenses"] == {"cc0": repo.json("data/raw/report.json")["images"]}
    headline = {"accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "log_loss", "top_k_accuracy", "top_k",
                "images", "ece", "accuracy_ci_low", "accuracy_ci_high", "per_class"}
    for split in (metrics["train"], metrics["val"], metrics["test"]):
        assert headline <= set(split)
        assert 0.0 <= split["accuracy_ci_low"] <= split["accuracy"] <= split["accuracy_ci_high"] <= 1.0
        assert sum(row["support"] for row in split["per_class"].values()) == split["images"]
    table = pd.read_csv(repo.root / "metrics/per_class_test.csv")
    assert list(table.columns) == ["class_id", "class_name", "images", "correct", "incorrect", "precision", "recall", "f1"]
    assert table.images.sum() == metrics["test"]["images"]
    assert len(pd.read_csv(repo.root / "metrics/confusion_test.csv")) == metrics["test"]["images"]
    for name in ("train", "val", "test"):  # one row per image of every split, for `inat-classifier compare`
        predictions = pd.read_csv(repo.root / f"metrics/predictions_{name}.csv")
        assert len(predictions) == metrics[name]["images"] and predictions.path.is_unique
    classes = read_class_names(repo.root / "data/subset/classes.json")  # objects with their taxonomy
    assert len(classes) == 4 and set(table.class_name) == set(classes)
    assert all(metrics[name]["genus_accuracy"] == metrics[name]["family_accuracy"] == 1.0 for name in ("train", "val", "test"))  # one made-up genus
    card = (repo.root / "reports/MODEL_CARD.md").read_text()
    assert card.startswith("# Model card") and "Not exported yet for this model" in card  # export.json: another's
    assert "incorrectly" in (repo.root / "reports/evaluate.md").read_text()
    assert repo.json("metrics/subset.json")["duplicates"]["dropped"] == 0  # the sample has no copies
    first_step = {"train_head": 0, "finetune": TINY["train_head"]["epochs"]}  # one axis for both phases
    for phase in ("train_head", "finetune"):
        logged = repo.json(f"dvclive/{phase}/metrics.json")
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(logged)
        assert logged["step"] == first_step[phase] + TINY[phase]["epochs"] - 1
    assert not (repo.root / "checkpoints" / "finetune").exists()  # removed when a stage completes


def test_the_training_stages_say_which_cpu_kernels_they_run(repo):
    """Forced by TF_ENABLE_ONEDNN_OPTS (as make test runs them), else train.onednn: auto, Eigen's at 32 px; and
    the threads each operation is split over, which change the rounding too."""
    kernels = "oneDNN" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1" else "Eigen"
    threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0) or len(os.sched_getaffinity(0))  # 0: one per CPU
    assert repo.first_output.count(f"CPU kernels {kernels}, CPU threads {threads}") == 2  # train_head and finetune
    assert repo.first_output.count("elementwise fusion off") == 2  # train.fuse_elementwise: auto, small images


def test_a_successful_run_logs_no_error_level_lines(repo):
    """TensorFlow's C++ errors (``E0000 ...``) look like failures to a user, even after a good run."""
    errors = [line for line in repo.first_output.splitlines() if re.match(r"\s*[EF]\d{4} ", line)]
    assert errors == []


@pytest.mark.workflow
def test_dvclive_left_dvc_yaml_alone(repo):
    assert repo.run("git", "diff", "--exit-code", "HEAD~1", "--", "dvc.yaml").returncode == 0


def test_second_repro_does_nothing(repo):
    output = repo.dvc("repro")
    assert stages_run(output) == []
    assert "up to date" in repo.dvc("status")


def test_training_is_deterministic_for_a_fixed_seed(repo):
    repo.dvc("repro", "--force", "--single-item", "train_head")
    repo.dvc("repro", "--force", "--single-item", "finetune")
    repo.dvc("repro", "--force", "--single-item", "evaluate")
    repo.dvc("repro", "--force", "--single-item", "report")
    changed = repo.run("git", "status", "--porcelain").stdout
    assert changed == "", f"a forced rerun changed: {changed}"


@pytest.mark.workflow
def test_params_changes_rerun_only_the_stages_that_read_them(repo):
    assert stages_run(repo.dvc("exp", "run", "-S", "finetune.learning_rate=0.003")) == ["finetune", "evaluate", "report"]
    assert stages_run(repo.dvc("exp", "run", "-S", "evaluate.top_k=1")) == ["evaluate", "report"]
    assert repo.json("metrics/evaluate.json")["test"]["top_k"] == 1  # the key stays top_k_accuracy
    # A param the card restates but scoring does not read: the model is not run again. (No param is read
    # by the card alone; this one's stage, subset, writes the same files, as the sample has no copies.)
    scores = (repo.root / "metrics/evaluate.json").read_bytes()
    assert stages_run(repo.dvc("exp", "run", "-S", "subset.drop_duplicates=false")) == ["subset", "report"]
    assert (repo.root / "metrics/evaluate.json").read_bytes() == scores
    assert "drop_duplicates: false" in (repo.root / "reports/MODEL_CARD.md").read_text()
    # A data param reaches every later stage through data/subset, which DVC hashes: only subset (and the
    # card) read it, and once subset has run, the training and scoring stages are out of date.
    before = {name: (repo.root / name).read_text() for name in ("params.yaml", "dvc.lock", "metrics/subset.json")}
    params = yaml.safe_load(before["params.yaml"])
    params["subset"]["num_classes"] = 3
    (repo.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(json.loads(repo.run("dvc", "status", "--json").stdout)) == {"subset", "report"}
    assert stages_run(repo.dvc("repro", "--single-item", "subset")) == ["subset"]
    assert len(json.loads((repo.root / "data/subset/classes.json").read_text())) == 3
    assert set(json.loads(repo.run("dvc", "status", "--json").stdout)) == {"train_head", "finetune", "evaluate", "report"}
    for name, text in before.items():  # back to the last experiment's workspace, for the tests below
        (repo.root / name).write_text(text)
    repo.dvc("checkout")  # data/subset from the cache; metrics/subset.json, not cached, restored above
    assert "up to date" in repo.dvc("status")


@pytest.mark.workflow
def test_experiments_are_comparable_with_dvc_tools(repo):
    """After `exp run -S finetune.learning_rate=...`: both runs' headline metrics, and both confusion matrices."""
    shown = json.loads(repo.run("dvc", "exp", "show", "--json").stdout)
    baseline = next(entry for entry in shown if entry["rev"] != "workspace")  # the committed run
    experiments = [run for group in baseline.get("experiments") or [] for run in group["revs"]]
    tuned = [run for run in experiments
             if run["data"]["params"]["params.yaml"]["data"]["finetune"]["learning_rate"] == 0.003]
    assert tuned and tuned[0]["name"], "the learning-rate experiment is not listed"
    for run in (baseline, tuned[0]):
        scores = run["data"]["metrics"]["metrics/evaluate.json"]["data"]
        assert 0.0 <= scores["test"]["accuracy"] <= 1.0 and "ece" in scores["test"]
    diff = repo.dvc("metrics", "diff", "--all", "--md")
    assert "test.accuracy" in diff and "test.per_class." in diff
    repo.dvc("plots", "diff", "HEAD", tuned[0]["name"], "-o", "plots_out")
    page = (repo.root / "plots_out" / "index.html").read_text()
    for title in ("Confusion matrix (test)", "Confusion matrix, row-normalised (test)", "Recall per class (test)",
                  "Reliability (test)", "Accuracy (head, then fine-tuning)"):
        assert title in page
    assert "HEAD" in page and tuned[0]["name"] in page  # both revisions drawn
    assert "worst_test.png" in page  # the gallery is an image plot


@pytest.mark.workflow
def test_a_queued_grid_runs_two_at_a_time_and_dvc_exp_show_lists_it(repo):
    """A sweep as the README shows it: DVC's own grid syntax queues every combination (here 2 x 1), the
    queue runs them with -j 2, exp show lists them. Queued runs see only committed files."""
    repo.dvc("exp", "run", "--queue", "-S", "evaluate.top_k=1,2", "-S", "evaluate.splits=[test]")  # evaluate only
    repo.dvc("queue", "start", "-j", "2")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = repo.dvc("queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(5)
    repo.dvc("queue", "stop")  # workers would otherwise idle on
    assert len(re.findall(r"\bSuccess\b", status)) == 2 and "Failed" not in status, status
    shown = json.loads(repo.run("dvc", "exp", "show", "--json").stdout)
    runs = [run for entry in shown if entry["rev"] != "workspace" for group in entry.get("experiments") or []
            for run in group["revs"]]
    grid = sorted((run["data"]["params"]["params.yaml"]["data"]["evaluate"]["top_k"],
                   run["data"]["params"]["params.yaml"]["data"]["evaluate"]["splits"]) for run in runs
                  if run["data"]["params"]["params.yaml"]["data"]["evaluate"]["splits"] == ["test"])
    assert grid == [(1, ["test"]), (2, ["test"])]
    table = repo.dvc("exp", "show", "--no-pager", "--md", "--sort-by", "metrics/evaluate.json:test.accuracy")
    assert all(run["name"] in table for run in runs)
