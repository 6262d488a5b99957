"""Training on every local GPU (``train.distribute: mirrored``) or on several machines (``multi_worker``).

Both are synchronous data parallelism: every replica holds the whole model, takes its share of each
global batch (``data.batch_size``) and applies the same averaged gradients. What tf.distribute leaves
to us is keeping the workers one run: the chief alone writes (a second writer would clobber the
first on a shared disk), and what the chief alone reads (a checkpoint, the head model) reaches the
others through a collective, so a worker never depends on files only the chief has.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ..errors import UserError
from ..params import Train

TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}'
JOBS = ("chief", "worker")


def strategy_for(config: Train) -> tf.distribute.Strategy:
    """The strategy ``train.distribute`` names; create it before any other TensorFlow op runs.

    MultiWorkerMirroredStrategy sets up the runtime's collective ops, which TensorFlow allows only
    before the runtime starts.
    """
    if config.distribute == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif config.distribute == "multi_worker":
        read_tf_config(os.environ.get("TF_CONFIG"))
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    if config.distribute != "none":
        fix_keras_fit()
    role = "" if not is_multi_worker(strategy) else (", chief" if is_chief(strategy) else ", not the chief: writes nothing")
    print(f"distribute: {config.distribute}, {strategy.num_replicas_in_sync} replica(s){role}")
    return strategy


def fix_keras_fit() -> None:
    """Two fixes to Keras 3.15's fit under tf.distribute (keras-team/keras#20585, tensorflow#72388).

    Fit builds the model from the mean over the replicas of a first batch: MultiWorkerMirroredStrategy
    cannot reduce a tuple, and no strategy can reduce shares of different sizes; one replica's share
    has all the shapes building needs. And on several workers fit averages each step's metrics along
    an axis 0 that scalars do not have.
    """
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_inat_fixed", False):
        return
    build, reduce = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica

    def build_from_one_share(self, iterator=None, data_batch=None):
        if iterator is not None and data_batch is None and self._distribute_strategy is not None:
            local = self.distribute_strategy.experimental_local_results
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(lambda value: local(value)[0], next(batches))
                break
            iterator = None
        return build(self, iterator=iterator, data_batch=data_batch)

    def reduce_scalars_too(values, strategy, reduction="auto"):
        if reduction not in ("auto", "mean") or not trainer._collective_all_reduce_multi_worker(strategy):
            return reduce(values, strategy, reduction)

        def mean(value):
            scalar = strategy.experimental_local_results(value)[0].shape.rank == 0
            return strategy.reduce("MEAN", value, axis=None if scalar else 0)

        return keras.tree.map_structure(mean, values)

    trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_one_share
    trainer.reduce_per_replica = reduce_scalars_too
    trainer._inat_fixed = True


def read_tf_config(raw: str | None) -> dict:
    """TF_CONFIG checked as MultiWorkerMirroredStrategy reads it: one line on what is wrong.

    Without it TensorFlow would quietly train on this machine alone; with a malformed one it fails
    deep inside with a traceback.
    """

    def bad(problem: str) -> UserError:
        return UserError(f"train.distribute is multi_worker, but TF_CONFIG {problem}; "
                         f"set it on every machine like {TF_CONFIG_EXAMPLE}")

    if not raw:
        raise bad("is not set (or use train.distribute: none | mirrored)")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad(f"is not JSON ({exc.msg})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or set(cluster) - set(JOBS):
        raise bad(f"has no cluster of {' and '.join(JOBS)} jobs")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(
            isinstance(address, str) and address.rpartition(":")[2].isdigit() for address in addresses
        ):
            raise bad(f"cluster.{job} is not a list of host:port addresses")
    if len(cluster.get("chief", [])) > 1:
        raise bad("lists more than one chief")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise bad(f"task.type is not one of the cluster's jobs ({', '.join(cluster)})")
    index, count = task.get("index"), len(cluster[task["type"]])
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise bad(f"task.index is not 0..{count - 1}")
    return config


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: task ``chief``, else worker 0; always, on one machine.

    The same rule as MultiWorkerMirroredStrategy's, whose chief also supplies every variable's
    initial value: all workers hold the same weights, so one copy of the model and the logs is the
    whole result.
    """
    resolver = strategy.cluster_resolver if is_multi_worker(strategy) else None
    if resolver is None:
        return True
    return is_chief_task(resolver.cluster_spec().jobs, resolver.task_type, resolver.task_id)


def is_chief_task(jobs: Collection[str], task_type: str | None, task_id: int | None) -> bool:
    """The rule of :func:`is_chief` on a cluster's job names and this task (no task: a lone worker)."""
    if not task_type:
        return True
    return task_type == ("chief" if "chief" in jobs else "worker") and task_id == 0


def from_chief(strategy: tf.distribute.Strategy, value: tf.Tensor) -> tf.Tensor:
    """The chief's ``value`` on every worker; every worker must call this, in the same order.

    A sum over the workers of the chief's value and everyone else's zeros: an all-reduce, the
    collective the strategy offers, standing in for a broadcast.
    """
    if not is_multi_worker(strategy):
        return tf.convert_to_tensor(value)
    value = tf.convert_to_tensor(value)
    mine = value if is_chief(strategy) else tf.zeros_like(value)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, mine, axis=None)


def copy_from_chief(strategy: tf.distribute.Strategy, variables: Sequence[keras.Variable]) -> None:
    """Set ``variables`` on every worker to the chief's values (what the chief alone restored)."""
    if is_multi_worker(strategy):
        for variable in variables:
            variable.assign(from_chief(strategy, variable.value))


def leave_together(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker, the chief included, is done: to the chief, a worker gone early looks crashed."""
    from_chief(strategy, tf.constant(0))


def mean_over_replicas(strategy: tf.distribute.Strategy, variables: Sequence[keras.Variable]) -> None:
    """Set ``variables`` to the mean of the replicas' own copies, which each replica updated alone.

    Keras 3 updates BatchNormalization's moving statistics that way, each replica from its share of
    the batch; averaged, every replica holds the same model again. One collective for all of them.
    """
    if strategy.num_replicas_in_sync == 1 or not variables:
        return

    @tf.function  # run in each replica, where a variable reads as that replica's copy
    def copies() -> tf.Tensor:
        return tf.concat([tf.reshape(v.value, [-1]) for v in variables], 0)

    mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(copies), axis=None)
    for variable, value in zip(variables, tf.split(mean, [int(np.prod(v.shape)) for v in variables])):
        variable.assign(tf.reshape(value, variable.shape))


@contextlib.contextmanager
def chief_file(strategy: tf.distribute.Strategy, path: str | Path) -> Iterator[Path]:
    """``path`` as the chief has it, on every worker: the others read a temporary copy of its bytes.

    Only the chief writes outputs, so another machine has no models/head.keras (or a stale one, or,
    on a shared disk, one the chief is still writing). Loading the same bytes everywhere also creates
    the same variables everywhere, which MultiWorkerMirroredStrategy requires.
    """
    path = Path(path)
    if not is_multi_worker(strategy):
        yield path
        return
    chief = is_chief(strategy)
    data = path.read_bytes() if chief and path.is_file() else None
    size = int(from_chief(strategy, tf.constant(-1 if data is None else len(data), tf.int64)))
    if size < 0:
        raise UserError(f"{path}: not found on the chief; run the stage that writes it there first")
    words = from_chief(strategy, _words(data if chief else bytes(size)))
    if chief:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="from-chief.") as scratch:
        copy = Path(scratch) / path.name
        copy.write_bytes(words.numpy().tobytes()[:size])
        yield copy


def _words(data: bytes) -> np.ndarray:
    """Bytes as int32 words: the collective sums integers exactly, and zeros leave them as they are."""
    return np.frombuffer(data + bytes(-len(data) % 4), np.int32)
