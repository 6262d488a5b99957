"""How a training stage picks TensorFlow's CPU kernels (``train.onednn``) before TensorFlow loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from inat_classifier import stage
from inat_classifier.params import parse_params


@pytest.mark.parametrize(
    "onednn, image_size, expected",
    [
        ("auto", 48, "0"),  # small images: Eigen's kernels, faster there
        ("auto", 64, "0"),
        ("auto", 224, None),  # TensorFlow's own choice, per CPU
        (True, 48, "1"),
        (False, 224, "0"),
    ],
)
def test_the_kernels_follow_train_onednn_and_the_image_size(monkeypatch, onednn, image_size, expected):
    params = parse_params({"train": {"onednn": onednn}, "data": {"image_size": image_size}})
    monkeypatch.setattr(stage, "_params", lambda: params)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    stage.choose_cpu_kernels()
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == expected


@pytest.mark.parametrize("forced", ["0", "1"])
def test_an_explicit_environment_variable_wins(monkeypatch, forced):
    params = parse_params({"train": {"onednn": forced == "0"}})  # the opposite of what is forced
    monkeypatch.setattr(stage, "_params", lambda: params)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", forced)
    stage.choose_cpu_kernels()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == forced


def test_tensorflow_loaded_afterwards_uses_the_kernels_chosen(tmp_path):
    """The choice must reach TensorFlow, which reads it once when it loads."""
    probe = (
        "from inat_classifier import stage\n"
        "stage.validate(); stage.choose_cpu_kernels()\n"
        "from tensorflow.python.util import _pywrap_util_port\n"
        "print(_pywrap_util_port.IsMklEnabled())\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    seen = {}
    for onednn in ("auto", True):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"image_size": 48}, "train": {"onednn": onednn}}))
        result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        seen[onednn] = result.stdout.split()[-1]
    assert seen == {"auto": "False", True: "True"}
