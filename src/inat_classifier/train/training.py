"""What both training stages share: determinism, the device setup, compiling, resumable fitting.

A training stage killed mid-epoch (``kill -9``, a lost machine) resumes from its last checkpointed
epoch when rerun (one about every ``CHECKPOINT_SECONDS`` of training): ``Resume`` keeps weights and
optimizer state outside DVC's outputs (DVC deletes those before rerunning a stage), the per-epoch
logs are kept beside them so dvclive's curves are whole, and the data pipeline replays any epoch on
its own (see ``dataset.py``), so the resumed run ends with the bytes of an uninterrupted one. A
checkpoint of other settings, inputs, code, TensorFlow/Keras versions or device settings (CPU
threads included) is discarded, never resumed, and so is one that cannot be read (a kill or a full
disk mid-write): the run starts afresh. On several workers the chief alone writes the logs and the
checkpoint (``distribute.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.config import disable_op_determinism  # no public call undoes enable_op_determinism
from tensorflow.python.util import _pywrap_util_port  # whether oneDNN is on: TensorFlow has no public call
from dvclive import Live
from sklearn.utils.class_weight import compute_class_weight

from ..atomic import write_json
from .dataset import (
    DRAWS_PER_EPOCH,
    STEP_BUDGET,
    STEP_BYTES_PER_PIXEL,
    TRAINING_BATCHNORM_BYTES,
    Batches,
    has_gpu,
    images_within_budget,
)
from .distribute import copy_from_chief, from_chief, is_chief, is_multi_worker, mean_over_replicas
from ..layout import CHECKPOINT_DIR, LIVE_DIR
from .model import batchnorm_in_training, moving_statistics, trained_share
from .recipe import FUSION_FLAGS, KERAS_ADAM_EPSILON
from ..params import Data, Params, Phase, Train

CODE_DIR = Path(__file__).parent  # the package's modules: a fix to any of them invalidates checkpoints


def make_deterministic(seed: int, ops: bool = True) -> None:
    """Same seed, same machine, same bytes: seeds every RNG and refuses non-deterministic ops.

    ``ops=False`` (``train.jit_compile: true``) leaves the ops free: Keras compiles no model with XLA
    while TensorFlow's op determinism is on, and would say so only in a warning.
    """
    keras.utils.set_random_seed(seed)
    if ops:
        tf.config.experimental.enable_op_determinism()
    else:
        disable_op_determinism()


def resolve_device(config: Train, gpu: bool) -> tuple[str, bool]:
    """(precision policy, XLA for the model). ``auto``: mixed_float16 on a GPU; XLA never, since Keras
    compiles no model with XLA under deterministic ops (the byte-identical contract), and on this CPU
    it measured far slower anyway."""
    precision = config.precision if config.precision != "auto" else ("mixed_float16" if gpu else "float32")
    return precision, config.jit_compile is True


def use_device(config: Train) -> bool:
    """Set the global precision policy before any model is built; return whether to compile with XLA.

    ``cpu_bf16_math`` sets oneDNN's default floating-point math mode, which it reads when it makes its
    first kernel: weights and activations stay float32, convolutions and matrix products round their
    inputs to bfloat16 where the CPU multiplies those natively (measured in docs/speed.md).
    """
    if config.cpu_bf16_math:
        os.environ["ONEDNN_DEFAULT_FPMATH_MODE"] = "BF16"
    gpus = tf.config.list_physical_devices("GPU")
    for device in gpus:  # take GPU memory as needed: queued experiments may share one GPU
        tf.config.experimental.set_memory_growth(device, True)
    precision, jit_compile = resolve_device(config, bool(gpus))
    keras.mixed_precision.set_global_policy(precision)
    where = f"{len(gpus)} GPU(s)" if gpus else "CPU"
    kernels = "oneDNN" if _pywrap_util_port.IsMklEnabled() else "Eigen"  # train.onednn, or TensorFlow's choice
    xla = "on (ops not deterministic)" if jit_compile else "off"
    flags = os.environ.get("TF_XLA_FLAGS")  # train.fuse_elementwise, or the user's own
    fused = "on" if flags == FUSION_FLAGS else f"off (TF_XLA_FLAGS={flags})" if flags else "off"
    print(f"device: {where}, precision {precision}, XLA {xla}, elementwise fusion {fused}, "
          f"CPU kernels {kernels}, CPU threads {cpu_threads()}")
    return jit_compile


def cpu_threads() -> int:
    """The threads each CPU operation is split over: ``TF_NUM_INTRAOP_THREADS``, else TensorFlow's one per
    CPU this process may run on. The split changes the rounding, so it is part of the machine type of the
    byte-identical contract (docs/reproducibility.md); the number of inter-op threads is not."""
    requested = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    if requested.isdigit() and int(requested) > 0:
        return int(requested)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def learning_rate(phase: Phase, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The phase's rate: constant, or cosine decay to 0 by its last step, after an optional linear warm-up.

    The offline default decays: it reached 0.914 test accuracy where 30 constant-rate epochs were not
    tried and 12 reached 0.648; docs/reproducibility.md has the levers and the spread that remains.
    """
    if phase.schedule == "constant":
        return phase.learning_rate
    warmup = phase.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else phase.learning_rate,
        decay_steps=max(1, (phase.epochs - phase.warmup_epochs) * steps_per_epoch),
        warmup_target=phase.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


@keras.saving.register_keras_serializable(package="inat_classifier")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels with label smoothing: Keras' sparse loss cannot smooth, and its
    dense one would need one-hot labels from every dataset."""

    def __init__(self, label_smoothing: float, **kwargs):
        super().__init__(**kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32"), y_pred.shape[-1])
        return keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="inat_classifier")
class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam, each variable's update one fused TensorFlow op (``ResourceApplyAdam``) instead of about twenty.

    The same update (``m * lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) / (sqrt(v) + epsilon)``; rounding may
    differ in the last bit). EfficientNetB0's training step has about 17,000 graph operations and half
    of them were Adam's: tracing the step took a third longer (docs/speed.md).
    """

    def update_step(self, gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices):  # sparse gradients (embeddings): Keras' own update
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def accumulation_steps(batch_size: int, image_size: int, trained_share: float, gpu: bool,
                       batchnorm_trains: bool = False) -> int:
    """In how many pieces a CPU computes each training batch so that a step's activations fit the budget.

    The optimizer sums the pieces' gradients and updates once per batch (Keras'
    ``gradient_accumulation_steps``), so ``data.batch_size`` keeps its meaning while fine-tuning a
    random base at 224 px (BatchNormalization training) holds about a GB less (2 pieces of 16); the
    study's recipe (BatchNormalization frozen) fits whole batches there, which train about 15% faster
    than pieces (docs/speed.md). A divisor of the batch when one is near, so that the pieces are equal.
    BatchNormalization layers that train see the pieces. A GPU's memory is not the machine's, and its
    speed needs large batches: one piece there.
    """
    budget = STEP_BUDGET - (TRAINING_BATCHNORM_BYTES if batchnorm_trains else 0)
    least = -(-batch_size // images_within_budget(image_size, trained_share, STEP_BYTES_PER_PIXEL, budget))
    if gpu or least <= 1:
        return 1
    return next((steps for steps in range(least, 2 * least + 1) if batch_size % steps == 0), least)


def batch_pieces(model: keras.Model, data: Data, replicas: int) -> tuple[int, int]:
    """(pieces, images a piece) of each training batch of ``model`` on this machine; says so when it splits."""
    pieces = accumulation_steps(-(-data.batch_size // replicas), data.image_size, trained_share(model), has_gpu(),
                                batchnorm_in_training(model))
    piece = -(-data.batch_size // pieces)
    if pieces > 1:
        print(f"each batch of {data.batch_size} runs as {pieces} pieces of {piece} images, gradients summed "
              "(a whole step's activations would not fit the memory budget)")
    return pieces, piece


def compile_model(
    model: keras.Model,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    jit_compile: bool = False,
    *,
    label_smoothing: float = 0.0,
    weight_decay: float = 0.0,
    use_ema: bool = False,
    soft_labels: bool = False,
    accumulation: int = 1,
    epsilon: float = KERAS_ADAM_EPSILON,
    clipnorm: float | None = None,
) -> None:
    """Compile under the model's strategy: the optimizer's and metrics' variables must be distributed too.

    Adam with ``weight_decay`` is AdamW (Keras decays weights apart from the gradient step); with
    ``use_ema`` fit ends by writing the average of the weights into the model. ``soft_labels``: the
    batches carry label shares (MixUp, CutMix) instead of class numbers. ``accumulation``: batches
    the optimizer sums the gradients of before it updates (``accumulation_steps``); ``epsilon``: Adam's
    (``adam_epsilon``); ``clipnorm``: the cap on the global norm of each update's gradient (``global_clipnorm``;
    of the pieces' mean, and of each replica's share under ``train.distribute``, as Keras clips).
    """
    with model.distribute_strategy.scope():
        if soft_labels:
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
            accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")  # against the larger share
        else:
            loss = SmoothedSparseCrossentropy(label_smoothing) if label_smoothing else keras.losses.SparseCategoricalCrossentropy()
            accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        model.compile(
            optimizer=FusedAdam(learning_rate, epsilon=epsilon, global_clipnorm=clipnorm, weight_decay=weight_decay or None,
                                use_ema=use_ema,
                                gradient_accumulation_steps=accumulation if accumulation > 1 else None),
            loss=loss,
            metrics=[accuracy],
            jit_compile=jit_compile,
        )
        if model.jit_compile != jit_compile:  # Keras turns XLA off with a warning (deterministic ops, some layers)
            raise RuntimeError(f"XLA was asked {'on' if jit_compile else 'off'} but Keras compiled the model "
                               f"{'with' if model.jit_compile else 'without'} it: call make_deterministic(seed, ops=False) first")
        # Keras builds the optimizer lazily, inside the first trace of the training step on one device:
        # TensorFlow then traces the whole step a second time, without the variable creation
        # (EfficientNetB0: 20-25 s of every training stage). Built here, the step is traced once.
        if model.built:
            model.optimizer.build(model.trainable_variables)


def class_weights(mode: str, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """``balanced``: n / (classes * count) per class, as the study suggested for its uneven classes."""
    if mode == "none":
        return None
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels)
    return {label: round(float(weight), 6) for label, weight in enumerate(weights)}


def fingerprint(params: Params, *inputs: str | Path, script: str | Path | None = None) -> str:
    """What a checkpoint must match to be resumed: every param, the bytes of the inputs and of the code
    (this package and the stage ``script``, by default the one running), the TensorFlow and Keras
    versions, the resolved device settings, the CPU kernels asked for and the CPU threads."""
    digest = hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode())
    gpus = len(tf.config.list_physical_devices("GPU"))
    variables = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "TF_XLA_FLAGS")
    numerics = [*(os.environ.get(name) for name in variables), cpu_threads()]
    digest.update(json.dumps([tf.__version__, keras.__version__, gpus, resolve_device(params.train, gpus > 0), numerics]).encode())
    code = [(path.relative_to(CODE_DIR).as_posix(), path) for path in sorted(CODE_DIR.rglob("*.py"))]
    stage = script or getattr(sys.modules.get("__main__"), "__file__", None)
    if stage:
        code.append((Path(stage).name, Path(stage)))
    for name, path in [*code, *((str(path), Path(path)) for path in inputs)]:
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


STATE_FILE = "state.npz"  # in checkpoints/<stage>/, beside "fingerprint" and "history.json"
# A kill loses at most this much training, besides the epoch it interrupts. Written after every epoch,
# the checkpoint cost 0.18 s of each five-second epoch of the offline default (7 s of a run).
CHECKPOINT_SECONDS = 30.0


def training_state(model: keras.Model) -> list:
    """Every variable a resumed run needs: the model's weights and the optimizer's (built if not yet)."""
    optimizer = getattr(model, "optimizer", None)  # None, or no attribute at all, before compile
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)  # as fit would before the first step
    return [*model.weights, *(optimizer.variables if optimizer is not None else [])]


def write_checkpoint(directory: Path, model: keras.Model, epochs_done: int) -> None:
    """One .npz of every variable and the epoch count, replaced whole: a kill mid-write leaves the last one.

    About 0.3 s for EfficientNetB0 with Adam's state; Keras' HDF5 weights file (a group per layer)
    took 1-1.4 s an epoch (docs/speed.md). No fsync: a power cut that leaves a damaged file only
    costs a fresh start, as any unreadable checkpoint does.
    """
    arrays = {f"v{index}": variable.numpy() for index, variable in enumerate(training_state(model))}
    partial = directory / f"{STATE_FILE}.partial"
    with open(partial, "wb") as out:
        np.savez(out, epochs_done=np.int64(epochs_done), **arrays)
    os.replace(partial, directory / STATE_FILE)


def read_checkpoint(path: Path, variables: list) -> tuple[int, list[np.ndarray]]:
    """The epoch count and one array per variable, or ValueError/OSError if the file does not fit them."""
    with np.load(path, allow_pickle=False) as saved:
        values = [saved[f"v{index}"] for index in range(len(variables))]
        if len(saved.files) != len(variables) + 1:
            raise ValueError(f"{len(saved.files) - 1} arrays for {len(variables)} variables")
        epochs_done = int(saved["epochs_done"])
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{variable.path}: shape {tuple(variable.shape)}, saved {value.shape}")
    return epochs_done, values


class Resume(keras.callbacks.Callback):
    """Keeps a completed epoch (weights, optimizer state, logs) and resumes after it.

    It writes after the first epoch that ends ``every`` seconds or more after the last write (or the
    start), so at most that much training is redone after a kill; 0 writes after every epoch.

    A checkpoint of other settings is discarded, and so is one that cannot be read whole; nothing is
    assigned until all of it has been read. Only a worker that ``writes`` (the chief) touches the
    directory; the others resume from the epoch and the state the chief restored, received from it,
    so all continue alike even where the checkpoint is on the chief's disk alone.
    """

    def __init__(self, directory: Path, stamp: str, writes: bool = True, every: float | None = None):
        super().__init__()
        self.directory, self.stamp, self.writes = Path(directory), stamp, writes
        self.every = CHECKPOINT_SECONDS if every is None else every  # seconds of training between checkpoints
        self.history: list[dict] = []
        self.last_written = time.monotonic()

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.writes:
            self._restore()
        self.last_written = time.monotonic()
        strategy = self.model.distribute_strategy
        if is_multi_worker(strategy):
            start = int(from_chief(strategy, tf.constant(self.model._initial_epoch or 0, tf.int64)))
            if start:
                copy_from_chief(strategy, training_state(self.model))
                self.model._initial_epoch = start

    def _restore(self) -> None:
        stamp_file = self.directory / "fingerprint"
        if self.directory.exists() and not _reads(stamp_file, self.stamp):
            print(f"{self.directory}: checkpoint of other settings, inputs, code or versions, starting afresh")
            shutil.rmtree(self.directory)
        if (self.directory / STATE_FILE).exists():
            self._resume()
        start = self.model._initial_epoch or 0
        if start:
            print(f"{self.directory}: resuming after epoch {start}")
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp_file.write_text(self.stamp)

    def _resume(self) -> None:
        """Restore the checkpoint, or discard it whole if any part cannot be read."""
        try:
            variables = training_state(self.model)
            start, values = read_checkpoint(self.directory / STATE_FILE, variables)
            history = json.loads((self.directory / "history.json").read_text())[:start]
            if len(history) != start:
                raise ValueError(f"history.json has {len(history)} epochs, the weights {start}")
        except Exception as exc:  # noqa: BLE001 - truncated JSON, a truncated .npz, a missing file...
            print(f"{self.directory}: checkpoint unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}), "
                  "starting afresh")
            shutil.rmtree(self.directory)
            return
        for variable, value in zip(variables, values):
            variable.assign(value)
        self.model._initial_epoch, self.history = start, history

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.writes:
            return
        self.history.append({name: round(float(value), 6) for name, value in sorted((logs or {}).items())})
        if time.monotonic() - self.last_written < self.every:
            return
        # Logs first, weights second: a kill in between leaves logs for an epoch that is then redone.
        write_json(self.directory / "history.json", self.history)
        write_checkpoint(self.directory, self.model, epoch + 1)
        self.last_written = time.monotonic()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.writes:
            shutil.rmtree(self.directory, ignore_errors=True)


def _reads(path: Path, expected: str) -> bool:
    try:
        return path.read_text() == expected
    except (OSError, UnicodeDecodeError):
        return False


class LiveLogger(keras.callbacks.Callback):
    """Per-epoch loss and accuracy (train and validation) to dvclive, without touching dvc.yaml.

    dvc.yaml declares these files itself; dvclive would otherwise rewrite it on every run. Steps
    start at ``first_step`` so fine-tuning's epochs follow the head's on one axis; epochs done before
    a resume are replayed from the checkpoint's logs.
    """

    def __init__(self, directory: Path, resume: Resume, first_step: int = 0):
        super().__init__()
        self.live = Live(str(directory), dvcyaml=False, save_dvc_exp=False)
        self.resume, self.first_step = resume, first_step

    def on_train_begin(self, logs: dict | None = None) -> None:
        for epoch, logged in enumerate(self.resume.history):
            self._log(epoch, logged)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._log(epoch, logs or {})

    def _log(self, epoch: int, logs: dict) -> None:
        self.live.step = self.first_step + epoch
        for name, value in sorted(logs.items()):
            if name != "learning_rate":
                self.live.log_metric(name, round(float(value), 6))
        self.live.next_step()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.live.end()


def epoch_seeder(variables: list) -> Callable[[int], None]:
    """Sets the seed counters of Keras' random layers (dropout) among ``variables`` to a function of the epoch.

    They draw from a counter that runs on over the whole fit; keyed by epoch instead, any epoch's
    draws can be replayed on their own.
    """
    states = [v for v in variables if "seed_generator_state" in v.path]
    seeds = [int(state.numpy()[0]) for state in states]

    def reseed(epoch: int) -> None:
        for state, seed in zip(states, seeds):
            state.assign(np.array([seed, epoch * DRAWS_PER_EPOCH], dtype=state.dtype))

    return reseed


class EpochData(keras.callbacks.Callback):
    """Keys the epoch about to run to its number: the batches (Keras opens its iterator afterwards)
    and the model's dropout draws, so a resumed epoch repeats what an uninterrupted run would do."""

    def __init__(self, batches: Batches):
        super().__init__()
        self.batches = batches

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.reseed_model = epoch_seeder(self.model.non_trainable_variables)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.batches.set_epoch(epoch)
        self.reseed_model(epoch)


class SameStatistics(keras.callbacks.Callback):
    """Averages the replicas' BatchNormalization statistics before each validation and at the end.

    Each replica updates them from its own share of the batches (``distribute.mean_over_replicas``);
    averaged, all replicas validate, and the chief saves, one model: the logged val metrics are the
    saved model's.
    """

    def on_test_begin(self, logs: dict | None = None) -> None:
        mean_over_replicas(self.model.distribute_strategy, moving_statistics(self.model))

    on_train_end = on_test_begin


def fit(
    model: keras.Model,
    train: Batches,
    val: Batches,
    epochs: int,
    stage: str,
    stamp: str,
    patience: int = 0,
    first_step: int = 0,
    class_weight: dict[int, float] | None = None,
) -> keras.callbacks.History:
    """Fit with dvclive logging to ``dvclive/<stage>`` and a resumable checkpoint in ``checkpoints/<stage>``.

    The callbacks' order matters: Resume restores before LiveLogger replays, and saves each epoch's
    logs before LiveLogger writes them. Only the chief logs and checkpoints (``distribute.py``).
    """
    strategy = model.distribute_strategy
    chief = is_chief(strategy)
    resume = Resume(CHECKPOINT_DIR / stage, stamp, writes=chief)
    callbacks: list[keras.callbacks.Callback] = [resume, EpochData(train)]
    if chief:
        callbacks.insert(1, LiveLogger(LIVE_DIR / stage, resume, first_step))
    if strategy.num_replicas_in_sync > 1:
        callbacks.append(SameStatistics())
    if patience:  # its patience counter restarts with a resumed run
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        )
    # The datasets order themselves (seeded per epoch); Keras must not shuffle.
    replicas = strategy.num_replicas_in_sync
    return model.fit(
        train.for_replicas(replicas),
        validation_data=val.for_replicas(replicas),
        epochs=epochs,
        callbacks=callbacks,
        verbose=2,
        shuffle=False,
        class_weight=class_weight,
    )
