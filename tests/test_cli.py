"""The command line itself: its version and defaults that do not depend on the current folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inat_classifier.cli import DEFAULT_MODEL, main, project_path


def test_version_is_printed_without_loading_tensorflow(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("inat-classifier ") and out != "inat-classifier "
    result = subprocess.run([sys.executable, "-c", "import sys; from inat_classifier.cli import main\n"
                             "try: main(['--version'])\nexcept SystemExit: print('tensorflow' in sys.modules)"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("False")


def test_the_default_model_is_found_from_any_folder_of_the_project(tmp_path, monkeypatch, capsys):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    deep = tmp_path / "reports" / "sub"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert project_path(DEFAULT_MODEL) == tmp_path.resolve() / DEFAULT_MODEL
    assert main(["predict", "x.jpg"]) == 2  # no model yet: the error names the project's model file
    assert f"{tmp_path.resolve() / DEFAULT_MODEL}: model file not found" in capsys.readouterr().err


def test_outside_a_project_the_default_model_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert project_path(DEFAULT_MODEL) == Path("models/model.keras")
