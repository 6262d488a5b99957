"""What each ``auto`` of the training recipe resolves to, for pretrained weights and for a random base,
and so whether fine-tuning fuses elementwise operations (``train.fuse_elementwise``).

Apart from the model code, which needs Keras: the finetune stage must resolve the fusion before
TensorFlow loads, and the report stage states the recipe in the model card without loading it.
"""

from __future__ import annotations

import importlib.metadata
import os

from ..params import Finetune, ModelParams, Phase, Train
from ..stage import SMALL_IMAGES

UNFREEZE_PRETRAINED = 20  # the Keras fine-tuning example's top 20 layers
KERAS_DROP_CONNECT = 0.2  # keras.applications.EfficientNetB0's drop_connect_rate (the study's)
KERAS_ADAM_EPSILON = 1e-7  # keras.optimizers.Adam's (the study's)
RANDOM_BASE_ADAM_EPSILON = 1e-3
RANDOM_BASE_CLIPNORM = 10.0  # a few times the usual global gradient norm of the offline default (2-14)


def unfrozen_layers(finetune: Finetune, config: ModelParams) -> int | str:
    """``finetune.unfreeze``; ``auto``: the top 20 for pretrained weights, ``all`` of a random base (it must all learn)."""
    if finetune.unfreeze == "auto":
        return UNFREEZE_PRETRAINED if config.pretrained else "all"
    return finetune.unfreeze


def batchnorm_trains(finetune: Finetune, config: ModelParams) -> bool:
    """``finetune.batchnorm``; ``auto``: pretrained statistics are worth protecting, a random base's are not."""
    if finetune.batchnorm == "auto":
        return not config.pretrained
    return finetune.batchnorm == "train"


def stochastic_depth(finetune: Finetune, config: ModelParams) -> float:
    """``finetune.stochastic_depth``; ``auto``: Keras' rate with pretrained weights, none for a random base.

    Dropping whole blocks regularises a network that already knows features; a random base fine-tuned
    for a few hundred steps must first learn them, and with the blocks dropped it learnt slowly enough
    that how far it got depended on the CPU's rounding (docs/reproducibility.md).
    """
    if finetune.stochastic_depth == "auto":
        return KERAS_DROP_CONNECT if config.pretrained else 0.0
    return finetune.stochastic_depth


def adam_epsilon(phase: Phase, config: ModelParams) -> float:
    """``adam_epsilon``; ``auto``: Keras' with pretrained weights, 1e-3 for a random base.

    Adam divides each weight's step by its gradient's running scale plus epsilon. Training a random
    base from scratch, weights whose gradients are about 1e-6 (rounding noise around zero, different
    on every CPU) still took steps of nearly the full learning rate at Keras' 1e-7; at 1e-3 they barely
    move, and fewer runs of the offline default stalled (docs/reproducibility.md).
    """
    if phase.adam_epsilon == "auto":
        return KERAS_ADAM_EPSILON if config.pretrained else RANDOM_BASE_ADAM_EPSILON
    return phase.adam_epsilon


def global_clipnorm(phase: Phase, config: ModelParams) -> float | None:
    """``global_clipnorm`` (None: off); ``auto``: off with pretrained weights, 10 for a random base.

    Training a random base, a rare batch's gradient was 100 to 3,000 times the usual global norm
    (2-14). Adam's running scale of the squared gradient keeps such a step for about 1,000 steps, longer
    than the rest of the run, so every later step shrank and the run stalled: the runs that fell
    short of the others (docs/reproducibility.md). Capped, such a batch counts as a large one.
    """
    norm = (None if config.pretrained else RANDOM_BASE_CLIPNORM) if phase.global_clipnorm == "auto" else phase.global_clipnorm
    return norm or None


# TensorFlow's auto-clustering, restricted to the operations XLA fuses (elementwise chains, reductions):
# the convolutions stay oneDNN's or Eigen's (XLA's own were 12x slower), and each cluster compiles at first use.
FUSION_FLAGS = "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit --tf_xla_ops_to_cluster=FUSIBLE --tf_xla_enable_lazy_compilation=false"


def _cpu_build() -> bool:
    """The CPU-only TensorFlow of requirements.lock, where fusing was measured (it can use no GPU)."""
    try:
        importlib.metadata.distribution("tensorflow-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def fuses_elementwise(train: Train, image_size: int, finetune: Finetune, model: ModelParams) -> bool:
    """``train.fuse_elementwise`` for fine-tuning; ``auto``: where it measured faster (docs/speed.md).

    The study's recipe (the whole base, BatchNorm frozen) at 224 px: epochs 1.2x faster. Slower where
    BatchNorm trains, at 48 px and for the top 20 layers only; compiling costs about 25 s once a run.
    """
    if train.fuse_elementwise == "auto":
        return (_cpu_build() and image_size > SMALL_IMAGES and train.jit_compile is not True
                and unfrozen_layers(finetune, model) == "all" and not batchnorm_trains(finetune, model))
    return train.fuse_elementwise


def choose_fusion(train: Train, image_size: int, finetune: Finetune, model: ModelParams) -> None:
    """Set ``train.fuse_elementwise`` for TensorFlow, which reads its XLA flags once when it loads.

    An explicit ``TF_XLA_FLAGS`` wins (empty: no fusion), as ``TF_ENABLE_ONEDNN_OPTS`` does for the kernels.
    """
    if "TF_XLA_FLAGS" not in os.environ and fuses_elementwise(train, image_size, finetune, model):
        os.environ["TF_XLA_FLAGS"] = FUSION_FLAGS
