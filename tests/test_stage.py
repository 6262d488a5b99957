"""How a training stage picks TensorFlow's CPU kernels (``train.onednn``) and XLA flags (``train.fuse_elementwise``) before TensorFlow loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from inat_classifier import stage
from inat_classifier.train import recipe
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
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    stage.choose_cpu_kernels(onednn, image_size)
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == expected


@pytest.mark.parametrize("forced", ["0", "1"])
def test_an_explicit_environment_variable_wins(monkeypatch, forced):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", forced)
    stage.choose_cpu_kernels(forced == "0", 48)  # the opposite of what is forced
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == forced


def test_tensorflow_loaded_afterwards_uses_the_kernels_chosen(tmp_path):
    """The choice must reach TensorFlow, which reads it once when it loads."""
    probe = (
        "from inat_classifier import stage\n"
        "params = stage.validate(); stage.choose_cpu_kernels(params.train.onednn, params.data.image_size)\n"
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


@pytest.mark.parametrize(
    "fuse, image_size, weights, unfreeze, batchnorm, cpu_build, expected",
    [
        ("auto", 224, "file", "all", "auto", True, True),  # the study's recipe: pretrained base, BatchNorm frozen
        ("auto", 224, "file", "all", "auto", False, False),  # another TensorFlow build (GPU, macOS): not measured
        ("auto", 48, "file", "all", "auto", True, False),  # small images: slower, and the compile is not won back
        ("auto", 224, "file", "auto", "auto", True, False),  # the top 20 layers: slower
        ("auto", 224, "none", "auto", "auto", True, False),  # a random base trains BatchNorm: slower
        ("auto", 224, "file", "all", "train", True, False),
        (True, 48, "none", "auto", "auto", False, True),
        (False, 224, "file", "all", "auto", True, False),
    ],
)
def test_elementwise_fusion_follows_the_recipe_and_the_image_size(
        tmp_path, monkeypatch, fuse, image_size, weights, unfreeze, batchnorm, cpu_build, expected):
    weights_file = tmp_path / "base.weights.h5"
    weights_file.write_bytes(b"")
    params = parse_params({"train": {"fuse_elementwise": fuse}, "data": {"image_size": image_size},
                           "model": {"weights": str(weights_file) if weights == "file" else None},
                           "finetune": {"batchnorm": batchnorm, "unfreeze": unfreeze}})
    monkeypatch.setattr(recipe, "_cpu_build", lambda: cpu_build)
    args = params.train, params.data.image_size, params.finetune, params.model
    assert recipe.fuses_elementwise(*args) is expected
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    recipe.choose_fusion(*args)
    assert os.environ.get("TF_XLA_FLAGS") == (recipe.FUSION_FLAGS if expected else None)
    monkeypatch.setenv("TF_XLA_FLAGS", "")  # explicit, even empty (benchmarks' "no fusion"), wins
    recipe.choose_fusion(*args)
    assert os.environ["TF_XLA_FLAGS"] == ""


def test_the_requirements_lock_installs_the_cpu_build_that_auto_fusion_was_measured_on():
    assert recipe._cpu_build() is True


def test_tensorflow_takes_the_fusion_flags_and_fuses_elementwise_ops_only(tmp_path):
    """A TensorFlow that dropped one of these flags would abort every fine-tuning run at start-up."""
    probe = (
        "import tensorflow as tf\n"
        "tf.config.experimental.enable_op_determinism()\n"
        "@tf.function\n"
        "def step(x, k):\n"
        "    y = tf.nn.conv2d(x, k, 1, 'SAME')\n"
        "    return tf.reduce_sum(tf.nn.silu(y) * 2.0 + 1.0)\n"
        "print('SUM', float(step(tf.ones((2, 8, 8, 3)), tf.ones((3, 3, 3, 4)) * 0.1)))\n"
    )
    dumps = tmp_path / "graphs"
    sums = []
    for flags in (recipe.FUSION_FLAGS + " --tf_xla_clustering_debug", ""):
        env = {**os.environ, "TF_XLA_FLAGS": flags, "TF_DUMP_GRAPH_PREFIX": str(dumps), "TF_CPP_MIN_LOG_LEVEL": "2"}
        result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        sums.append(float(result.stdout.split("SUM")[-1]))
    assert sums[0] == pytest.approx(sums[1], rel=1e-5)  # the same sum, rounded in another order
    clustered = "".join(path.read_text() for path in dumps.glob("mark_for_compilation*.pbtxt"))
    assert "_XlaCluster" in clustered  # the elementwise ops were marked for XLA ...
    convolutions = [node for node in clustered.split("node {") if 'op: "Conv2D"' in node]
    assert convolutions and not any("_XlaCluster" in node for node in convolutions)  # ... the convolution not
