"""dvc.yaml as a model registry and a plots source: the README's register, promote and fetch steps
run by DVC and GTO themselves in a scratch repository holding this project's artifact declaration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
MODEL = "inat-classifier"


def outputs(stage: dict) -> list[str]:
    return [next(iter(out)) if isinstance(out, dict) else out for out in stage.get("outs", [])]


def test_the_trained_model_is_a_registered_artifact():
    artifact = DVC_YAML["artifacts"][MODEL]
    assert artifact["type"] == "model" and artifact["desc"] and artifact["labels"]
    assert artifact["path"] in outputs(DVC_YAML["stages"]["finetune"])  # what `dvc artifacts get` fetches


def test_every_image_a_stage_writes_is_an_image_plot():
    images = [path for stage in DVC_YAML["stages"].values() for path in outputs(stage) if path.endswith(".png")]
    declared = [entry for entry in DVC_YAML["plots"] if isinstance(entry, str)]
    assert images and sorted(images) == sorted(declared)


def run(root: Path, *args: str) -> str:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_register_promote_and_fetch_the_model_as_the_readme_shows(tmp_path):
    """`gto register` / `gto assign` make the tags the README names; `dvc artifacts get` fetches by both."""
    path = DVC_YAML["artifacts"][MODEL]["path"]
    run(tmp_path, "git", "init", "-q")
    run(tmp_path, "git", "config", "user.email", "test@example.com")
    run(tmp_path, "git", "config", "user.name", "test")
    run(tmp_path, "dvc", "init", "-q")
    stage = {"cmd": f"python -c \"import pathlib; p = pathlib.Path('{path}'); p.parent.mkdir(); p.write_text('v1')\"",
             "outs": [path]}
    scratch = {"stages": {"finetune": stage}, "artifacts": DVC_YAML["artifacts"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(scratch, sort_keys=False))
    run(tmp_path, "dvc", "repro", "-q")
    run(tmp_path, "git", "add", "-A")
    run(tmp_path, "git", "commit", "-qm", "model")
    run(tmp_path, "gto", "register", MODEL, "--version", "v1.0.0")
    run(tmp_path, "gto", "assign", MODEL, "--version", "v1.0.0", "--stage", "prod")
    tags = run(tmp_path, "git", "tag").split()
    assert f"{MODEL}@v1.0.0" in tags and f"{MODEL}#prod#1" in tags
    run(tmp_path, "dvc", "artifacts", "get", ".", MODEL, "--stage", "prod", "-o", str(tmp_path / "prod.keras"))
    run(tmp_path, "dvc", "artifacts", "get", ".", MODEL, "--rev", "v1.0.0", "-o", str(tmp_path / "v1.keras"))
    assert (tmp_path / "prod.keras").read_text() == (tmp_path / "v1.keras").read_text() == "v1"


def test_analytics_and_update_checks_are_left_to_users_and_the_makefile_turns_analytics_off():
    config = (REPO / ".dvc" / "config").read_text()
    assert "analytics" not in config and "check_update" not in config  # a user's own choice, not the repo's
    assert "export DVC_NO_ANALYTICS := 1" in (REPO / "Makefile").read_text().splitlines()
