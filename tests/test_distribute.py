"""Training past one device: the param, TF_CONFIG, the chief, and two real workers on this machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from conftest import REPO
from inat_classifier.train.dataset import batches, images_only, load_split
from inat_classifier.train.distribute import is_chief, is_chief_task, read_tf_config, strategy_for
from inat_classifier.errors import ParamsError, UserError
from inat_classifier.train.features import FrozenBaseHead, head_model
from inat_classifier.train.model import build_classifier, load_model, recalibrate_batchnorm, save_model, unfreeze
from inat_classifier.train.recipe import batchnorm_trains, unfrozen_layers
from inat_classifier.params import Train, parse_params
from inat_classifier.train.training import compile_model, fingerprint, learning_rate, write_checkpoint
from helpers.tiny_classifier import CLASSES, picture

WORKERS = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}
TIMEOUT = 300  # seconds for a subprocess: a hang fails the test instead of blocking it
WORKER_THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}  # two workers share this machine


def tf_config(cluster: dict, task_type: str, index: object) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_distribute_defaults_to_one_device_and_names_its_choices_when_wrong():
    assert Train().distribute == "none"
    with pytest.raises(ParamsError) as caught:
        parse_params({"train": {"distribute": "horovod"}})
    assert "train.distribute: Input should be 'none', 'mirrored' or 'multi_worker'" in str(caught.value)


@pytest.mark.parametrize(
    "raw, problem",
    [
        (None, "TF_CONFIG is not set"),
        ("{'cluster': 1}", "TF_CONFIG is not JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "has no cluster of chief and worker jobs"),
        (tf_config({"ps": ["127.0.0.1:2222"]}, "ps", 0), "has no cluster of chief and worker jobs"),
        (tf_config({"worker": ["127.0.0.1"]}, "worker", 0), "cluster.worker is not a list of host:port addresses"),
        (tf_config({**WORKERS, "chief": ["a:1", "b:2"]}, "chief", 0), "lists more than one chief"),
        (tf_config(WORKERS, "chief", 0), "task.type is not one of the cluster's jobs (worker)"),
        (tf_config(WORKERS, "worker", 2), "task.index is not 0..1"),
        (tf_config(WORKERS, "worker", "0"), "task.index is not 0..1"),
    ],
)
def test_a_bad_tf_config_is_one_line_naming_the_param_and_an_example(raw, problem):
    with pytest.raises(UserError) as caught:
        read_tf_config(raw)
    message = str(caught.value)
    assert problem in message
    assert message.startswith("train.distribute is multi_worker, but TF_CONFIG") and '"cluster"' in message
    assert "\n" not in message


def test_a_good_tf_config_is_read_and_multi_worker_without_one_stops_before_any_training(monkeypatch):
    assert read_tf_config(tf_config(WORKERS, "worker", 1))["task"] == {"type": "worker", "index": 1}
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="TF_CONFIG is not set"):
        strategy_for(Train(distribute="multi_worker"))


@pytest.mark.parametrize(
    "jobs, task_type, task_id, chief",
    [
        (["worker"], "worker", 0, True),
        (["worker"], "worker", 1, False),
        (["chief", "worker"], "chief", 0, True),
        (["chief", "worker"], "worker", 0, False),
        (["worker"], None, None, True),  # no task: a worker on its own
    ],
)
def test_the_chief_is_task_chief_else_worker_zero(jobs, task_type, task_id, chief):
    assert is_chief_task(jobs, task_type, task_id) is chief


def test_on_one_machine_the_process_is_the_chief():
    assert is_chief(strategy_for(Train()))
    mirrored = strategy_for(Train(distribute="mirrored"))
    assert is_chief(mirrored) and mirrored.num_replicas_in_sync >= 1


def test_models_made_from_a_distributed_classifier_train_and_compile_under_its_strategy():
    """The stages build the classifier under the strategy; the models made from it must follow."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = build_classifier(parse_params({}).model, 2, 32)
    for made in (head_model(model), FrozenBaseHead(model), unfreeze(model, 5, batchnorm_trains=False)):
        assert made.distribute_strategy is strategy
        compile_model(made, 1e-3)
        assert all(isinstance(v.value, tf.distribute.DistributedValues) for v in made.metrics[0].variables)


def test_two_local_replicas_train_one_model_whose_logged_val_metrics_are_its_own(tmp_path):
    """``mirrored`` on a two-GPU machine, played by two logical CPUs."""
    result = subprocess.run([sys.executable, str(Path(__file__).parent / "helpers" / "mirrored_run.py")], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert run["replicas"] == 2
    history = run["history"]
    assert np.isfinite(history["loss"] + history["val_loss"]).all()  # no replica went without an image
    assert history["accuracy"][0] * 33 == pytest.approx(round(history["accuracy"][0] * 33), abs=1e-4)  # each once
    assert run["statistics"] == 2 and run["copies_equal"]  # the head's BatchNormalization, alike on both
    assert run["one_device_val"]["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-5)
    assert run["one_device_val"]["accuracy"] == pytest.approx(history["val_accuracy"][-1])


# Two workers fine-tune for the second of two epochs. The last of 33 training images and of 9
# validation images is a batch of one, which would leave a replica without an image (a crash where
# TensorFlow uses oneDNN): it joins the batch before.
PARAMS = {
    "data": {"image_size": 32, "batch_size": 8},
    "subset": {"num_classes": len(CLASSES)},
    "train": {"distribute": "multi_worker"},
    "finetune": {"epochs": 2, "unfreeze": 3, "batchnorm": "frozen"},  # saved = last validated; fast to trace
}
SPLITS = {"train": 33, "val": 9}
HEAD = "models/head.keras"


def write_images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, count in SPLITS.items():
        (root / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(picture(i % 2, rng, (40, 40))).save(root / split / f"{i:03d}-{i % 2}.png")
    return root


def write_workspace(root: Path, images: Path) -> Path:
    """What the finetune stage reads but models/head.keras: params.yaml, data/subset, the manifest."""
    subset = root / "data" / "subset"
    subset.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (subset / "classes.json").write_text(json.dumps(CLASSES))
    for split in SPLITS:
        paths = sorted((images / split).iterdir())
        labels = [int(path.stem.split("-")[1]) for path in paths]
        pd.DataFrame({"path": [str(p) for p in paths], "label": labels,
                      "class_name": [CLASSES[label] for label in labels]}).to_csv(subset / f"{split}.csv", index=False)
    (root / "data" / "raw").mkdir()
    (root / "data" / "raw" / "manifest.csv").write_text("path,split,class\n")
    return root


def write_head() -> None:
    """The train_head stage's output here, as a real run leaves it on the chief's disk only."""
    params = parse_params(PARAMS)
    model = build_classifier(params.model, len(CLASSES), params.data.image_size)
    recalibrate_batchnorm(model, images_only(load_split("train", params.data), params.data, params.seed))
    save_model(model, HEAD)


def interrupt_after_first_epoch() -> None:
    """The checkpoint a chief interrupted after epoch 1 leaves here, with weights other than head.keras's.

    The worker has none: it must take the epoch and the weights from the chief, or the two would
    run different epochs (a hang) or validate different models.
    """
    params = parse_params(PARAMS)
    config, directory = params.finetune, Path("checkpoints/finetune")
    model = unfreeze(load_model(HEAD), unfrozen_layers(config, params.model), batchnorm_trains(config, params.model))
    compile_model(model, learning_rate(config, steps_per_epoch=5))  # a schedule, as the stage's: no rate variable
    kernel = model.get_layer("predictions").kernel
    kernel.assign(kernel + np.random.default_rng(0).normal(0, 0.5, kernel.shape))
    directory.mkdir(parents=True)
    write_checkpoint(directory, model, 1)
    (directory / "history.json").write_text(json.dumps([{"accuracy": 0.5, "loss": 1.0, "val_accuracy": 0.5, "val_loss": 1.0}]))
    inputs = (HEAD, "data/subset/train.csv", "data/subset/val.csv", "data/raw/manifest.csv")  # as the stage names them
    with mock.patch.dict(os.environ, WORKER_THREADS):  # the workers' thread count, which the fingerprint holds
        (directory / "fingerprint").write_text(fingerprint(params, *inputs, script=REPO / "stages" / "finetune.py"))


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(stage: str, workspaces: list[Path]) -> list[str]:
    """Run ``stages/<stage>.py`` as every worker at once, one thread each (two share this machine)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(len(workspaces))]}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TF_CPP_MIN_LOG_LEVEL": "2", **WORKER_THREADS}
    processes = [
        subprocess.Popen([sys.executable, str(REPO / "stages" / f"{stage}.py")], cwd=root,
                         env={**env, "TF_CONFIG": tf_config(cluster, "worker", index)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for index, root in enumerate(workspaces)
    ]
    try:
        outputs = [process.communicate(timeout=TIMEOUT)[0] for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        outputs = [process.communicate()[0] for process in processes]
        pytest.fail(f"{stage}: the workers did not finish within {TIMEOUT} s (a hang):\n{outputs[0][-2000:]}")
    codes = [process.returncode for process in processes]
    assert codes == [0] * len(processes), "\n".join(f"{stage}, worker {i}:\n{out[-3000:]}" for i, out in enumerate(outputs))
    return outputs


def val_metrics(model_path: Path, root: Path) -> dict[str, float]:
    """The saved model on the validation split, in this process, on one device."""
    params = parse_params(PARAMS)
    model = load_model(model_path)
    compile_model(model, learning_rate=1e-3)
    val = batches(load_split("val", params.data, root / "data" / "subset"), params.data, params.seed, shuffle=False)
    return model.evaluate(val.dataset, verbose=0, return_dict=True)


def test_two_workers_fine_tune_as_one_and_only_the_chief_writes(tmp_path, monkeypatch):
    images = write_images(tmp_path / "images")
    chief, worker = (write_workspace(tmp_path / name, images) for name in ("chief", "worker"))
    monkeypatch.chdir(chief)  # the worker has neither of these: it must take the chief's
    write_head()
    interrupt_after_first_epoch()

    outputs = run_workers("finetune", [chief, worker])

    assert "distribute: multi_worker, 2 replica(s), chief" in outputs[0]
    assert "checkpoints/finetune: resuming after epoch 1" in outputs[0]
    assert "distribute: multi_worker, 2 replica(s), not the chief: writes nothing" in outputs[1]
    assert sorted(path.name for path in worker.iterdir()) == ["data", "params.yaml"]  # wrote nothing at all
    for output in ("models/model.keras", "models/model.classes.json", "dvclive/finetune/metrics.json"):
        assert (chief / output).is_file(), output
    assert list((chief / "checkpoints").iterdir()) == []  # removed once the run finished
    logged = json.loads((chief / "dvclive" / "finetune" / "metrics.json").read_text())
    assert np.isfinite([logged["loss"], logged["val_loss"]]).all()  # no replica went without an image
    assert logged["accuracy"] * 33 == pytest.approx(round(logged["accuracy"] * 33), abs=1e-4)  # 33 images, each once
    assert json.loads((chief / "dvclive" / "finetune" / "metrics.json").read_text())["step"] == 11  # 10 head epochs + 2
    saved = val_metrics(chief / "models" / "model.keras", chief)
    assert saved["loss"] == pytest.approx(logged["val_loss"], rel=1e-4, abs=5e-7)  # the log keeps 6 decimals
    assert saved["accuracy"] == pytest.approx(logged["val_accuracy"], abs=1e-6)
