"""Shared fixtures: tiny images and datasets written on the fly, never fetched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]


def write_image(path: Path, size=(40, 30), mode="RGB", seed=0, fmt=None) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def fetch(params, *args, **kwargs) -> None:
    """The download stage's call for a test's params: its section and the pixel cap."""
    from inat_classifier.data.sources import download

    download(params.download, params.data.max_pixels, *args, **kwargs)


# The code under test sets these in os.environ itself (stage.choose_cpu_kernels, recipe.choose_fusion,
# training.use_device), which monkeypatch cannot undo for a variable that was unset; left behind, one
# test's choice reaches every later stage its worker runs (a leaked fusion flag once failed a pipeline
# test when test_stage.py ran first on its worker).
NUMERICS_VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "TF_XLA_FLAGS", "ONEDNN_DEFAULT_FPMATH_MODE", "ONEDNN_MAX_CPU_ISA")


@pytest.fixture(autouse=True)
def numerics_environment_restored():
    """Restores the numerics variables after each test, after monkeypatch's own undo."""
    saved = {name: os.environ.get(name) for name in NUMERICS_VARIABLES}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def image_factory(tmp_path):
    def make(name="a.jpg", **kwargs):
        return write_image(tmp_path / name, **kwargs)

    return make


def pytest_report_header(config):
    """Which numerics path TensorFlow takes in this run (make test runs both)."""
    return f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (the CPU decides)')}"


def merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


class Repo:
    """A git repository to run ``dvc`` and the stages in, with this venv's tools first on PATH."""

    def __init__(self, root: Path):
        self.root = root
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=self.root, env=self.env, capture_output=True, text=True)
        if check and result.returncode:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def dvc(self, *args: str) -> str:
        result = self.run("dvc", *args)
        return result.stdout + result.stderr

    def json(self, path: str) -> dict:
        return json.loads((self.root / path).read_text())


def copy_repository(root: Path, params: dict) -> Repo:
    """The tracked files, without the committed run's results, as a fresh git repo; ``params``
    merged into params.yaml. ``metrics/export.json`` comes along: no stage writes it (`make export`
    does) and the report stage reads it, showing its figures only for the model they were measured on."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (name.startswith(("metrics/", "dvclive/")) and name != "metrics/export.json") or name == "dvc.lock":
            continue  # this copy makes its own
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    merged = merge(yaml.safe_load((root / "params.yaml").read_text()), params)
    (root / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    repo = Repo(root)
    repo.run("git", "init", "-q")
    repo.run("git", "config", "user.email", "test@example.com")
    repo.run("git", "config", "user.name", "test")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "copy")
    return repo
