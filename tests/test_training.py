"""Training mechanics: device choice, the feature cache's equivalence, resuming after kill -9."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from inat_classifier.train.augment import build_mixer  # noqa: E402
from inat_classifier.train.dataset import Split, batches, images_only  # noqa: E402
from inat_classifier.train.features import FrozenBaseHead, base_features, feature_batches, head_model  # noqa: E402
from inat_classifier.train.model import base_of, build_classifier, head_of, recalibrate_batchnorm, under_current_policy  # noqa: E402
from inat_classifier.params import Train, parse_params  # noqa: E402
from inat_classifier.train import training  # noqa: E402
from inat_classifier.train.recipe import FUSION_FLAGS  # noqa: E402
from inat_classifier.train.training import class_weights, compile_model, fit, make_deterministic, resolve_device  # noqa: E402

HERE = Path(__file__).parent
NO_AUGMENT = {"rotation": 0, "width_shift": 0, "height_shift": 0, "shear": 0, "zoom": 0,
              "horizontal_flip": False, "brightness": [1, 1]}


def test_auto_device_settings_are_mixed_precision_on_a_gpu_and_xla_only_when_asked_for():
    assert resolve_device(Train(), gpu=False) == ("float32", False)
    assert resolve_device(Train(), gpu=True) == ("mixed_float16", False)  # Keras compiles no XLA under deterministic ops
    assert resolve_device(Train(precision="mixed_bfloat16", jit_compile=False), gpu=True) == ("mixed_bfloat16", False)
    assert resolve_device(Train(precision="float32", jit_compile=True), gpu=False) == ("float32", True)


def test_xla_asked_for_is_what_keras_compiles_or_a_loud_error():
    """Keras silently (a warning) compiled without XLA under deterministic ops while the stage printed 'XLA on'."""
    def tiny() -> keras.Model:
        inputs = keras.Input((3,))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))

    try:
        make_deterministic(0, ops=False)  # what a stage does for train.jit_compile: true
        compile_model(model := tiny(), 1e-2, jit_compile=True)
        assert model.jit_compile is True
        make_deterministic(0)
        with pytest.raises(RuntimeError, match="XLA was asked on but Keras compiled the model without it"):
            compile_model(tiny(), 1e-2, jit_compile=True)
    finally:
        make_deterministic(0)
    compile_model(model := tiny(), 1e-2)
    assert model.jit_compile is False


def test_the_device_line_says_whether_elementwise_ops_are_fused(monkeypatch, capsys):
    monkeypatch.setenv("TF_XLA_FLAGS", FUSION_FLAGS)
    training.use_device(Train())
    monkeypatch.delenv("TF_XLA_FLAGS")
    training.use_device(Train())
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=1")  # a user's own flags are shown as they are
    training.use_device(Train())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("device:")]
    assert ["elementwise fusion on" in lines[0], "elementwise fusion off," in lines[1]] == [True, True]
    assert "elementwise fusion off (TF_XLA_FLAGS=--tf_xla_auto_jit=1)" in lines[2]
    assert all("XLA off" in line for line in lines)


def test_the_device_line_names_the_threads_each_cpu_operation_is_split_over(monkeypatch, capsys):
    """Another count rounds differently, so a run is byte-identical only with as many (docs/reproducibility.md)."""
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.setattr(training.os, "sched_getaffinity", lambda pid: {0, 3, 5})  # this process may use 3 CPUs
    training.use_device(Train())
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")  # TensorFlow's own variable wins
    training.use_device(Train())
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "0")  # TensorFlow's "choose for me"
    training.use_device(Train())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("device:")]
    assert [line.rsplit(", ", 1)[1] for line in lines] == ["CPU threads 3", "CPU threads 2", "CPU threads 3"]


def test_the_training_step_is_traced_once_not_again_for_the_optimizer_variables():
    # Keras creates the optimizer's variables inside the first trace on one device, and TensorFlow then
    # traces the step again without them: EfficientNetB0's step takes 10-25 s to trace.
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(4)(inputs)))
    compile_model(model, 1e-2)
    traces, step = [], model.train_step
    model.train_step = lambda data: traces.append(1) or step(data)
    model.fit(np.zeros((8, 3), np.float32), np.zeros(8, np.int64), batch_size=4, epochs=2, verbose=0)
    assert len(traces) == 1
    assert model.optimizer.iterations.numpy() == 4


@pytest.mark.parametrize("options", [{}, {"weight_decay": 0.05, "use_ema": True}])
def test_the_fused_adam_updates_as_keras_adam_in_fewer_graph_operations(options):
    x = np.random.default_rng(1).normal(size=(16, 5)).astype(np.float32)
    y = np.arange(16) % 3
    models = [keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)])
              for _ in "ab"]
    start = models[0].get_weights()
    models[1].set_weights(start)
    schedule = keras.optimizers.schedules.CosineDecay(0.05, 8)
    for model, optimizer in zip(models, (keras.optimizers.Adam, training.FusedAdam)):
        model.compile(optimizer=optimizer(schedule, **options), loss=keras.losses.SparseCategoricalCrossentropy(True))
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    keras_adam, fused = models
    for ours, theirs, initial in zip(fused.get_weights(), keras_adam.get_weights(), start):
        assert not np.allclose(theirs, initial)  # it trained (8 steps) ...
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)  # ... to the same weights (last-bit rounding apart)

    def operations(optimizer):
        variables = [keras.Variable(np.ones(4, np.float32)) for _ in range(3)]
        optimizer.build(variables)
        step = tf.function(lambda: optimizer.apply([tf.ones(4)] * 3, variables))
        return len(step.get_concrete_function().graph.get_operations())

    assert operations(training.FusedAdam(0.1)) < 0.6 * operations(keras.optimizers.Adam(0.1))


def test_balanced_class_weights_are_n_over_classes_times_count():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2])  # 6, 2 and 4 images
    assert class_weights("none", labels, 3) is None
    assert class_weights("balanced", labels, 3) == {0: round(12 / (3 * 6), 6), 1: 2.0, 2: 1.0}


def test_a_saved_float32_model_is_rebuilt_in_the_current_precision_with_its_weights():
    params = parse_params({})
    model = build_classifier(params.model, 3, 32)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        rebuilt = under_current_policy(model, params.model)
        assert rebuilt.get_layer("efficientnetb0").dtype_policy.name == "mixed_bfloat16"
        assert head_of(rebuilt)[-1].dtype_policy.name == "float32"  # softmax stays float32
        for ours, theirs in zip(rebuilt.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert under_current_policy(model, params.model) is model


def structured_split(n=24, size=32) -> Split:
    rng = np.random.default_rng(1)
    labels = np.arange(n, dtype=np.int32) % 3
    ramp = np.linspace(0, 255, size)
    pixels = np.stack([
        np.clip(np.outer(ramp, np.ones(size)) * (label + 1) / 3 + rng.normal(0, 20, (size, size)), 0, 255)
        for label in labels
    ])
    return Split("train", np.repeat(pixels[..., None], 3, -1).astype(np.uint8), labels, [], [])


def recalibrated_classifier(params, split):
    make_deterministic(params.seed)
    model = build_classifier(params.model, 3, 32)
    recalibrate_batchnorm(model, images_only(split, params.data, params.seed))
    return model


def test_a_head_trained_on_cached_features_matches_one_trained_end_to_end(tmp_path, monkeypatch):
    """Without augmentation the cache changes nothing but the cost: same batches, same head."""
    monkeypatch.chdir(tmp_path)
    params = parse_params({"data": {"image_size": 32, "batch_size": 8}, "augment": NO_AUGMENT,
                           "train_head": {"epochs": 3, "feature_cache": 1}})
    split = structured_split()

    end_to_end = recalibrated_classifier(params, split)
    frozen = FrozenBaseHead(end_to_end)
    compile_model(frozen, 1e-2)
    plain = batches(split, params.data, params.seed, shuffle=False)
    fit(frozen, batches(split, params.data, params.seed, shuffle=True), plain, 3, "e2e", "a")

    cached = recalibrated_classifier(params, split)
    features = base_features(cached, split, params.data, params.seed, params.augment, views=1)
    head = head_model(cached)
    compile_model(head, 1e-2)
    fit(head, feature_batches(features, split.labels, params.data, params.seed, True),
        feature_batches(features, split.labels, params.data, params.seed, False), 3, "cached", "b")

    trained = [w for layer in head_of(end_to_end) for w in layer.get_weights()]
    for ours, theirs in zip([w for layer in head_of(cached) for w in layer.get_weights()], trained):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=2e-4)
    assert not np.allclose(trained[-1], 0)  # the head did train
    pixels = split.pixels.astype("float32")
    np.testing.assert_allclose(cached.predict(pixels, verbose=0), end_to_end.predict(pixels, verbose=0), atol=1e-4)


def test_augmented_views_differ_from_the_plain_view_and_repeat_per_seed():
    params = parse_params({"data": {"image_size": 32, "batch_size": 8}})
    split = structured_split(n=8)
    model = recalibrated_classifier(params, split)
    first, again = base_features(model, split, params.data, params.seed, params.augment, 3), base_features(model, split, params.data, params.seed, params.augment, 3)
    assert first.shape == (3, 8, 1280)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[0], first[1]) and not np.allclose(first[1], first[2])
    data = feature_batches(first, split.labels, params.data, params.seed, shuffle=False)
    data.set_epoch(4)  # epoch 4 of 3 views: view 1
    np.testing.assert_array_equal(np.concatenate([x for x, _ in data.dataset.as_numpy_iterator()]), first[1])


def start(workdir: Path, *kill: int) -> subprocess.Popen:
    workdir.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, str(HERE / "helpers" / "resumable_run.py"), "model.keras", *map(str, kill)],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def test_a_run_killed_mid_epoch_resumes_and_ends_as_an_uninterrupted_run(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    uninterrupted, killed = start(whole), start(resumed, 2)  # side by side: they are independent
    code, out, err = finish(killed)
    assert code == -9, err[-2000:]
    assert not (resumed / "model.keras").exists()
    assert len(json.loads((resumed / "checkpoints" / "finetune" / "history.json").read_text())) == 2
    code, out, err = finish(start(resumed))
    assert code == 0, err[-2000:]
    assert "resuming after epoch 2" in out
    assert finish(uninterrupted)[0] == 0
    assert (resumed / "model.keras").read_bytes() == (whole / "model.keras").read_bytes()
    curves = [(d / "dvclive" / "finetune" / "plots" / "metrics" / "loss.tsv").read_text() for d in (whole, resumed)]
    assert curves[0] == curves[1]
    assert [line.split("\t")[0] for line in curves[0].splitlines()[1:]] == ["3", "4", "5", "6"]
    assert not (resumed / "checkpoints" / "finetune").exists()  # removed once the run finished


def test_checkpoints_are_written_once_every_seconds_of_training_with_the_logs_of_every_epoch(tmp_path, monkeypatch):
    """Writing after every epoch cost 3-4 % of the offline default; a kill now redoes at most ``every`` seconds."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    clock = iter(range(0, 1000, 4))  # each epoch takes 4 s
    monkeypatch.setattr(training.time, "monotonic", lambda: next(clock))
    resume = training.Resume(tmp_path / "finetune", "these settings", every=10)
    resume.set_model(model)
    resume.on_train_begin()
    written = []
    for epoch in range(7):
        resume.on_epoch_end(epoch, {"loss": float(epoch)})
        state = tmp_path / "finetune" / training.STATE_FILE
        if state.exists():
            done, _ = training.read_checkpoint(state, training.training_state(model))
            logs = json.loads((tmp_path / "finetune" / "history.json").read_text())
            assert [entry["loss"] for entry in logs] == list(range(done))  # the logs of exactly the saved epochs
            written.append(done)
    assert sorted(set(written)) == [3, 6]  # the first epochs to end 10 s or more after the last write


def test_a_checkpoint_of_other_settings_is_discarded_not_resumed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "checkpoints" / "head"
    stale.mkdir(parents=True)
    (stale / "fingerprint").write_text("other settings")
    (stale / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    params = parse_params({"data": {"image_size": 32, "batch_size": 8}})
    split = structured_split(n=8)
    model = recalibrated_classifier(params, split)
    features = base_features(model, split, params.data, params.seed, params.augment, 1)
    head = head_model(model)
    compile_model(head, 1e-3)
    data = feature_batches(features, split.labels, params.data, params.seed, False)
    history = fit(head, data, data, 2, "head", "these settings")
    assert len(history.history["loss"]) == 2  # both epochs ran: nothing was resumed
    assert not stale.exists()


def test_a_cosine_schedule_warms_up_then_decays_to_zero_by_the_last_step_and_constant_stays():
    from inat_classifier.params import Finetune
    from inat_classifier.train.training import learning_rate

    assert learning_rate(Finetune(epochs=4, learning_rate=0.01, schedule="constant"), steps_per_epoch=5) == 0.01
    schedule = learning_rate(Finetune(epochs=4, learning_rate=0.01, schedule="cosine", warmup_epochs=1), 5)
    rates = [float(schedule(step)) for step in range(21)]
    assert rates[0] == 0.0 and rates[5] == pytest.approx(0.01)  # linear rise over the first epoch
    assert rates[2] == pytest.approx(0.004)
    assert all(a >= b for a, b in zip(rates[5:], rates[6:])) and rates[20] == pytest.approx(0.0, abs=1e-9)
    plain = learning_rate(Finetune(epochs=2, learning_rate=0.01, schedule="cosine"), 5)
    assert float(plain(0)) == pytest.approx(0.01) and float(plain(5)) == pytest.approx(0.005)


def test_the_fingerprint_covers_code_versions_and_device_settings(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "module.py").write_text("STEP = 1\n")
    monkeypatch.setattr(training, "CODE_DIR", code)
    params = parse_params({})
    before = training.fingerprint(params)
    assert training.fingerprint(params) == before
    (code / "module.py").write_text("STEP = 2\n")  # a fix to the code
    changed = {"code": training.fingerprint(params)}
    (code / "module.py").write_text("STEP = 1\n")
    with monkeypatch.context() as patch:
        patch.setattr(keras, "__version__", "0.0.1")
        changed["keras"] = training.fingerprint(params)
    with monkeypatch.context() as patch:  # auto precision and XLA resolve differently on a GPU
        patch.setattr(training.tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
        changed["device"] = training.fingerprint(params)
    with monkeypatch.context() as patch:  # the CPU's numerics: bfloat16 math in oneDNN's kernels
        patch.setenv("ONEDNN_DEFAULT_FPMATH_MODE", "BF16")
        changed["numerics"] = training.fingerprint(params)
    with monkeypatch.context() as patch:  # train.fuse_elementwise: XLA's fused loops round differently
        patch.setenv("TF_XLA_FLAGS", FUSION_FLAGS)
        changed["fusion"] = training.fingerprint(params)
    with monkeypatch.context() as patch:  # another split of each operation rounds differently
        patch.setenv("TF_NUM_INTRAOP_THREADS", str(training.cpu_threads() + 1))
        changed["threads"] = training.fingerprint(params)
    assert training.fingerprint(params) == before
    assert all(value != before for value in changed.values()), changed
    assert len(set(changed.values())) == 6


def test_cpu_bf16_math_asks_onednn_for_bfloat16_math_before_the_first_kernel(monkeypatch):
    monkeypatch.delenv("ONEDNN_DEFAULT_FPMATH_MODE", raising=False)
    training.use_device(Train())
    assert "ONEDNN_DEFAULT_FPMATH_MODE" not in training.os.environ
    training.use_device(Train(cpu_bf16_math=True))
    assert training.os.environ["ONEDNN_DEFAULT_FPMATH_MODE"] == "BF16"


@pytest.mark.parametrize("damage", ["truncated file", "garbage", "state of another model", "weights without their logs"])
def test_an_unreadable_checkpoint_is_discarded_and_the_run_starts_afresh(tmp_path, monkeypatch, capsys, damage):
    """A kill or a full disk mid-write once made every rerun fail until checkpoints/ was deleted by hand."""
    monkeypatch.chdir(tmp_path)
    params = parse_params({"data": {"image_size": 32, "batch_size": 8}})
    split = structured_split(n=8)
    model = recalibrated_classifier(params, split)
    features = base_features(model, split, params.data, params.seed, params.augment, 1)
    data = feature_batches(features, split.labels, params.data, params.seed, False)

    def train(stage: str) -> keras.Model:
        make_deterministic(params.seed)
        head = head_model(model)
        head.set_weights([np.zeros_like(w) + 0.01 for w in head.get_weights()])
        compile_model(head, 1e-3)
        assert len(fit(head, data, data, 2, stage, "these settings").history["loss"]) == 2
        return head

    checkpoint = tmp_path / "checkpoints" / "head"
    checkpoint.mkdir(parents=True)
    (checkpoint / "fingerprint").write_text("these settings")
    other = head_model(model)  # real weights of another state: none of them may be kept
    other.set_weights([np.full_like(w, 0.5) for w in other.get_weights()])
    compile_model(other, 1e-3)
    training.write_checkpoint(checkpoint, other, 1)
    (checkpoint / "history.json").write_text('[{"loss": 1.0}]')
    state = checkpoint / training.STATE_FILE
    if damage == "truncated file":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "garbage":
        state.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    elif damage == "state of another model":
        training.write_checkpoint(checkpoint, model, 1)
    else:
        (checkpoint / "history.json").write_text("[]")
    resumed = train("head")
    assert "checkpoint unreadable" in capsys.readouterr().out
    assert not checkpoint.exists()
    fresh = train("fresh")
    for ours, theirs in zip(resumed.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_a_checkpoint_write_that_dies_midway_leaves_the_last_checkpoint_whole(tmp_path, monkeypatch):
    """What a kill or a full disk during ``write_checkpoint`` leaves: the previous epoch's file, intact."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    training.write_checkpoint(tmp_path, model, 1)
    state = tmp_path / training.STATE_FILE
    before = state.read_bytes()

    def dies_midway(file, **arrays):
        file.write(before[: len(before) // 2])  # half an archive on disk, then the process is gone
        raise OSError(28, "No space left on device")

    model.layers[0].kernel.assign(np.ones((3, 2)))
    with monkeypatch.context() as patch:
        patch.setattr(training.np, "savez", dies_midway)
        with pytest.raises(OSError):
            training.write_checkpoint(tmp_path, model, 2)
    assert state.read_bytes() == before
    epochs_done, values = training.read_checkpoint(state, training.training_state(model))
    assert epochs_done == 1 and not np.array_equal(values[0], np.ones((3, 2)))
    training.write_checkpoint(tmp_path, model, 2)  # the next epoch's write replaces it and the leftover
    assert training.read_checkpoint(state, training.training_state(model))[0] == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == [training.STATE_FILE]


def test_the_batchnorm_pass_picks_its_batch_size_from_a_memory_budget(monkeypatch):
    from inat_classifier.train import dataset

    # The old constant of 256 images at 224 px: over 20 GB, many times the budget.
    assert 256 * dataset.FORWARD_BYTES_PER_PIXEL * 224**2 > 10 * dataset.ACTIVATION_BUDGET
    chosen = dataset.statistics_batch_size(224)
    assert 8 <= chosen <= 16 and chosen * dataset.FORWARD_BYTES_PER_PIXEL * 224**2 <= dataset.ACTIVATION_BUDGET
    assert dataset.statistics_batch_size(48) == 256  # small pictures: the eager overhead decides

    # A budget 1/20 of what 256 images of 32 px would take: batches of 12, and the pass still works.
    monkeypatch.setattr(dataset, "ACTIVATION_BUDGET", 256 * dataset.FORWARD_BYTES_PER_PIXEL * 32**2 / 20)
    params = parse_params({"data": {"image_size": 32, "batch_size": 8}})
    split = structured_split(30)
    assert [len(batch) for batch in images_only(split, params.data, params.seed)] == [12, 12, 6]
    model = recalibrated_classifier(params, split)
    features = base_of(model).predict(split.pixels[:4].astype(np.float32), verbose=0)
    assert np.isfinite(features).all() and features.std(axis=0).mean() > 1e-3  # images no longer look alike


def test_fine_tuning_a_whole_base_at_224_px_splits_each_batch_to_fit_the_memory_budget(capsys):
    from inat_classifier.train import dataset
    from inat_classifier.train.model import batchnorm_in_training, trained_share, unfreeze
    from inat_classifier.train.training import accumulation_steps

    per_image = dataset.STEP_BYTES_PER_PIXEL * 224**2
    batchnorm_budget = dataset.STEP_BUDGET - dataset.TRAINING_BATCHNORM_BYTES
    # BatchNormalization training (a random base): a whole batch of 32 would not fit, pieces of 16 do.
    assert 32 * per_image > batchnorm_budget and 16 * per_image <= batchnorm_budget
    assert accumulation_steps(32, 224, 1.0, gpu=False, batchnorm_trains=True) == 2
    assert accumulation_steps(64, 224, 1.0, gpu=False, batchnorm_trains=True) == 4  # equal pieces: 3 of 22 would not fit
    assert accumulation_steps(47, 224, 1.0, gpu=False, batchnorm_trains=True) == 2  # no divisor near: 24 and 23
    # BatchNormalization frozen (the study's recipe): the whole batch fits, twice that does not.
    assert 32 * per_image <= dataset.STEP_BUDGET < 64 * per_image
    assert accumulation_steps(32, 224, 1.0, gpu=False) == 1
    assert accumulation_steps(64, 224, 1.0, gpu=False) == 2
    assert accumulation_steps(32, 48, 1.0, gpu=False, batchnorm_trains=True) == 1  # the offline default: one piece
    assert accumulation_steps(32, 224, 0.05, gpu=False, batchnorm_trains=True) == 1  # only the top layers keep activations
    assert accumulation_steps(32, 224, 1.0, gpu=True, batchnorm_trains=True) == 1

    def unfrozen(top_layers: int | str, batchnorm_trains: bool) -> keras.Model:  # each its own base: unfreeze sets its layers
        return unfreeze(build_classifier(parse_params({}).model, 3, 32), top_layers, batchnorm_trains)

    whole_base = unfrozen("all", True)
    assert trained_share(whole_base) > 0.95 and batchnorm_in_training(whole_base)  # from the stem convolution up
    # What the finetune stage asks: the batch's pieces for this model at the data's size, said in one line.
    assert training.batch_pieces(whole_base, parse_params({"data": {"image_size": 224}}).data, 1) == (2, 16)
    assert "each batch of 32 runs as 2 pieces of 16 images" in capsys.readouterr().out
    assert training.batch_pieces(whole_base, parse_params({"data": {"image_size": 48}}).data, 1) == (1, 32)
    assert capsys.readouterr().out == ""
    frozen_statistics = unfrozen("all", False)
    assert trained_share(frozen_statistics) > 0.95 and not batchnorm_in_training(frozen_statistics)
    assert training.batch_pieces(frozen_statistics, parse_params({"data": {"image_size": 224}}).data, 1) == (1, 32)
    top_layers = unfrozen(20, True)
    assert 0 < trained_share(top_layers) < 0.1 and batchnorm_in_training(top_layers)
    assert training.batch_pieces(top_layers, parse_params({"data": {"image_size": 224}}).data, 1) == (1, 32)
    assert capsys.readouterr().out == ""

    # Pieces of a batch update once, as the whole batch would (no BatchNormalization here to differ).
    x = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    y = np.arange(8) % 3
    whole, pieces = (keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")]) for _ in "ab")
    pieces.set_weights(whole.get_weights())
    compile_model(whole, 0.1)
    compile_model(pieces, 0.1, accumulation=4)
    whole.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    pieces.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)
    assert int(pieces.optimizer.iterations) == int(whole.optimizer.iterations) == 2
    for ours, theirs in zip(pieces.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not np.allclose(whole.get_weights()[0], pieces.get_weights()[0] * 0)  # it trained


def test_label_smoothing_weight_decay_and_ema_change_training_as_keras_defines_them():
    """Smoothing: the loss of a confident right answer rises to the smoothed target's; decay shrinks
    weights a gradient leaves alone; EMA ends training on the average of the weights."""
    from inat_classifier.train.training import SmoothedSparseCrossentropy

    probs = np.array([[0.98, 0.01, 0.01]], "float32")
    plain = float(keras.losses.SparseCategoricalCrossentropy()(np.array([0]), probs))
    smoothed = float(SmoothedSparseCrossentropy(0.3)(np.array([0]), probs))
    target = np.array([0.8, 0.1, 0.1])  # 0.3 spread evenly over 3 classes
    assert smoothed == pytest.approx(-(target * np.log(probs[0])).sum(), rel=1e-4) and smoothed > plain

    def trained(**options):
        make_deterministic(0)
        inputs = keras.Input((2,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="dense")(inputs))
        unused = model.get_layer("dense").kernel.numpy().copy()
        compile_model(model, 0.1, **options)
        x, y = np.zeros((8, 2), "float32"), np.zeros(8, "int64")  # zero inputs: the kernel gets no gradient
        model.fit(x, y, epochs=3, batch_size=4, verbose=0)
        return unused, model.get_layer("dense").kernel.numpy(), model

    start, kernel, _ = trained()
    np.testing.assert_allclose(kernel, start)
    start, decayed, model = trained(weight_decay=0.5)
    np.testing.assert_allclose(decayed, start * (1 - 0.1 * 0.5) ** 6, rtol=1e-5)  # 6 steps
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    _, _, smoothing_model = trained(label_smoothing=0.1)
    assert isinstance(smoothing_model.loss, SmoothedSparseCrossentropy)
    # The bias does learn; with momentum 0.99 the average over 6 steps stays much nearer its start (0).
    _, _, plain_model = trained()
    _, _, ema = trained(use_ema=True)
    moved = np.abs(plain_model.get_layer("dense").bias.numpy()).sum()
    assert moved > 0.1 and np.abs(ema.get_layer("dense").bias.numpy()).sum() < 0.3 * moved


def test_adam_epsilon_decides_whether_a_tiny_gradient_takes_a_full_step():
    """Adam scales each step by gradient / (its running scale + epsilon): at Keras' 1e-7 a weight whose
    gradient is tiny (5e-5) moves almost the whole learning rate, at the random base's 1e-3 it stays."""

    def kernel_step(epsilon):
        make_deterministic(0)
        inputs = keras.Input((2,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="dense")(inputs))
        start = model.get_layer("dense").kernel.numpy().copy()
        compile_model(model, 0.1, epsilon=epsilon)
        assert model.optimizer.epsilon == epsilon
        x, y = np.full((4, 2), 1e-4, "float32"), np.zeros(4, "int64")  # inputs of 1e-4: kernel gradients ~5e-5
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        return np.abs(model.get_layer("dense").kernel.numpy() - start).max()

    assert kernel_step(1e-7) > 0.05
    assert kernel_step(1e-3) < 1e-3


def test_global_clipnorm_keeps_one_huge_gradient_out_of_adams_running_scale():
    """Adam remembers a squared gradient for about 1,000 steps: uncapped, one batch with a huge gradient
    inflates that scale and shrinks every later step; capped, it counts no more than a norm of the cap."""

    def squared_scale(clipnorm):
        make_deterministic(0)
        inputs = keras.Input((2,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="dense")(inputs))
        compile_model(model, 1e-3, clipnorm=clipnorm)
        assert model.optimizer.global_clipnorm == clipnorm
        x, y = np.full((4, 2), 1e4, "float32"), np.ones(4, "int64")  # a gradient norm of thousands
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        return sum(float(np.sum(v.numpy())) for v in model.optimizer._velocities)  # (1 - beta_2) x |g|^2

    assert squared_scale(None) > 1.0
    assert squared_scale(1.0) <= 1e-3 * 1.0**2 * 1.001


def test_mixed_batches_train_on_label_shares_and_still_log_accuracy():
    """MixUp and CutMix give label shares: the loss is categorical, accuracy the larger share's class."""
    params = parse_params({"data": {"image_size": 32, "batch_size": 4}, "finetune": {"mixup": 0.4, "label_smoothing": 0.1}})
    split = structured_split(12)
    mixer = build_mixer(params.finetune.mixup, params.finetune.cutmix, 3)
    train = batches(split, params.data, params.seed, shuffle=True, augment=params.augment, mix=mixer)
    val = batches(split, params.data, params.seed, shuffle=False).one_hot(3)
    make_deterministic(0)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs)))
    compile_model(model, 0.01, label_smoothing=0.1, soft_labels=True)
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy) and model.loss.label_smoothing == 0.1
    history = model.fit(train.dataset, validation_data=val.dataset, epochs=2, verbose=0, shuffle=False).history
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(np.isfinite(history["loss"])) and 0.0 <= history["val_accuracy"][-1] <= 1.0
