"""``make report`` (``inat-classifier review``) on a tiny git + DVC repository: every section, by DVC itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_compare_cli import git, write_run

from inat_classifier.cli import main
from inat_classifier.errors import UserError
from inat_classifier.compare.review import dvc, write_review

DVC_YAML = """\
params:
  - params.yaml
metrics:
  - metrics/evaluate.json
plots:
  - reports/worst_test.png
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """main: 30 of 40 test photos right, lr 0.001; the workspace: 39 right, lr 0.003, another gallery."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "test@example.com")
    git(tmp_path, "config", "user.name", "test")
    dvc(tmp_path, "init", "-q")
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "params.yaml").write_text("finetune:\n  learning_rate: 0.001\n")
    (tmp_path / "reports").mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "reports/worst_test.png")
    write_run(tmp_path, {"test": 30})
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "main")
    (tmp_path / "params.yaml").write_text("finetune:\n  learning_rate: 0.003\n")
    Image.new("RGB", (8, 8), (0, 200, 0)).save(tmp_path / "reports/worst_test.png")
    write_run(tmp_path, {"test": 39})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_review_has_params_metrics_verdict_and_both_galleries(repo):
    text = write_review(repo).read_text()
    assert text.startswith("# Review: workspace against `main`")
    params = text[text.index("## Params"):text.index("## Metrics")]
    assert "finetune.learning_rate" in params and "0.001" in params and "0.003" in params and "|" in params
    metrics = text[text.index("## Metrics"):text.index("## Is the change")]
    assert "test.accuracy" in metrics and "0.75" in metrics and "0.975" in metrics
    assert "B is better" in text  # 30 -> 39 of 40 photos: McNemar p < 0.05
    for revision in ("main", "workspace"):
        link = next(line for line in text.splitlines() if line.startswith(f"![reports/worst_test.png ({revision})]"))
        assert (repo / "review" / link.split("](")[1].rstrip(")")).is_file()  # the image the link points to


def test_a_run_that_cannot_be_compared_still_gets_a_review(repo):
    write_run(repo, {"test": 39}, photos={"test": [f"other/{i}.jpg" for i in range(40)]})
    text = write_review(repo).read_text()
    assert "not compared: " in text and "## Metrics" in text


def test_an_unknown_base_is_one_line_and_exit_2(repo, capsys):
    with pytest.raises(UserError, match="dvc params diff nosuchrev --md failed: "):
        write_review(repo, "nosuchrev")
    assert main(["review", "--base", "nosuchrev"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dvc params diff nosuchrev") and err.count("\n") == 1
