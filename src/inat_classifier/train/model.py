"""EfficientNetB0 with a new head: building, (un)freezing, BatchNorm care, stable saving and safe loading."""

from __future__ import annotations

import json
import re
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import keras

from ..atomic import atomic_path
from ..errors import UserError
from ..params import ModelParams

BASE = "efficientnetb0"
HEAD_LAYERS = ("head_bn", "head_dropout", "predictions")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def build_base(config: ModelParams, image_size: int) -> keras.Model:
    """The backbone without its top, globally average-pooled. ``imagenet`` is Keras' own download."""
    weights = None if config.weights == "none" else config.weights
    try:
        return keras.applications.EfficientNetB0(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3), pooling="avg", name=BASE
        )
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise UserError(f"model.weights: cannot load '{config.weights}' into {config.backbone}: {reason}") from None


def assemble(base: keras.Model, head: list[keras.Layer], image_size: int) -> keras.Model:
    """Wire input -> base -> head, under the base's distribution strategy (where its variables live).

    No ``training=False`` on the base: Keras 3 lets the outer call's ``training`` override it. Frozen
    BatchNormalization layers stay in inference mode by being non-trainable; the frozen phase runs
    the base in inference mode itself (``features.py``).
    """
    with base.distribute_strategy.scope():
        inputs = keras.Input((image_size, image_size, 3), name="image")  # 0..255: EfficientNet rescales itself
        x = base(inputs)
        for layer in head:
            x = layer(x)
        return keras.Model(inputs, x, name="classifier")


def build_classifier(config: ModelParams, num_classes: int, image_size: int) -> keras.Model:
    """Frozen base, then pooling (in the base), batch normalisation, dropout and a softmax layer."""
    base = build_base(config, image_size)
    base.trainable = False
    head = [
        keras.layers.BatchNormalization(name=HEAD_LAYERS[0]),
        keras.layers.Dropout(config.dropout, name=HEAD_LAYERS[1]),
        keras.layers.Dense(num_classes, activation="softmax", name=HEAD_LAYERS[2], dtype="float32"),
    ]
    return assemble(base, head, image_size)


def under_current_policy(model: keras.Model, config: ModelParams) -> keras.Model:
    """``model`` rebuilt in the global precision policy: loaded layers keep the one they were saved in."""
    policy = keras.mixed_precision.global_policy().name
    if base_of(model).dtype_policy.name == policy:
        return model
    num_classes, image_size = model.output_shape[-1], model.input_shape[1]
    rebuilt = build_classifier(config.model_copy(update={"weights": "none"}), num_classes, image_size)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def base_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BASE)


def head_of(model: keras.Model) -> list[keras.Layer]:
    return [model.get_layer(name) for name in HEAD_LAYERS]


def unfreeze(model: keras.Model, top_layers: int | str, batchnorm_trains: bool) -> keras.Model:
    """Unfreeze ``all`` or the top N base layers; return the model rewired for fine-tuning.

    With pretrained weights BatchNormalization stays in inference mode (its statistics are worth
    protecting, as in the Keras fine-tuning example). A random base has none worth protecting, so its
    BatchNormalization layers train with the rest of the network.
    """
    base = base_of(model)
    base.trainable = True
    layers = base.layers
    frozen = layers[: first_unfrozen(layers, top_layers)]
    for layer in frozen:
        layer.trainable = False
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization) and not batchnorm_trains:
            layer.trainable = False
    image_size = model.input_shape[1]
    return assemble(base, head_of(model), image_size)


def first_unfrozen(layers: list[keras.layers.Layer], top_layers: int | str) -> int:
    """Index of the lowest layer to train: ``all``, the top N, or ``blockN``, the first layer of
    EfficientNet's block N (named ``blockNa_...``), so that no block is split."""
    if top_layers == "all":
        return 0
    if isinstance(top_layers, int):
        return max(len(layers) - top_layers, 0)
    names = [layer.name for layer in layers]
    starts = [i for i, name in enumerate(names) if name.startswith(f"{top_layers}a_")]
    if not starts:
        blocks = sorted({name.split("a_")[0] for name in names if re.match(r"block\d+a_", name)})
        raise UserError(f"finetune.unfreeze: the base has no layer {top_layers}a_* (its blocks: {', '.join(blocks)})")
    return starts[0]


def batchnorm_in_training(model: keras.Model) -> bool:
    """Whether any of the base's BatchNormalization layers trains (``unfreeze``): a step then holds more."""
    return any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable for layer in base_of(model).layers)


def trained_share(model: keras.Model) -> float:
    """The share of the base's layers from its lowest trainable one up: a training step keeps their activations."""
    layers = base_of(model).layers
    first = next((i for i, layer in enumerate(layers) if layer.trainable and layer.trainable_weights), len(layers))
    return (len(layers) - first) / len(layers)


def set_stochastic_depth(model: keras.Model, rate: float) -> None:
    """Set the base's block-dropping layers as Keras would build them with ``drop_connect_rate=rate``.

    Keras fixes EfficientNet's rate at 0.2; block b of B (``block<N><x>_``, in order) drops its
    output with ``rate * b / B`` where the block has a skip connection (``block<N><x>_drop``).
    """
    layers = base_of(model).layers
    blocks = list(dict.fromkeys(m.group(1) for layer in layers if (m := re.match(r"(block\d+[a-z])_", layer.name))))
    for layer in layers:
        name = layer.name.removesuffix("_drop")
        if isinstance(layer, keras.layers.Dropout) and name in blocks:
            layer.rate = rate * blocks.index(name) / len(blocks)


def recalibrate_batchnorm(model: keras.Model, images: Iterable) -> None:
    """Set every BatchNormalization layer's moving statistics to the average over ``images`` (batches).

    A random base in inference mode otherwise maps every image to the same features (its moving
    statistics are still the initial 0 and 1), and a model whose BatchNormalization trained keeps
    statistics that lag its final weights, in the head as much as in the base. One pass in training
    mode, dropout off, with momentum k/(k+1) on the k-th batch leaves the running mean of the batch
    statistics. Splits are stored sorted by class, so the batches must be shuffled samples of all of
    it, in batches as large as memory allows (``dataset.images_only``).
    """
    layers = list(model._flatten_layers(include_self=False))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    dropouts = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    saved = [(layer.momentum, layer.trainable) for layer in norms], [layer.rate for layer in dropouts]
    try:
        for layer in norms:
            layer.trainable = True
        for layer in dropouts:
            layer.rate = 0.0
        for k, batch in enumerate(images):
            for layer in norms:
                layer.momentum = k / (k + 1)
            model(batch, training=True)
    finally:
        for layer, (momentum, trainable) in zip(norms, saved[0]):
            layer.momentum, layer.trainable = momentum, trainable
        for layer, rate in zip(dropouts, saved[1]):
            layer.rate = rate


def moving_statistics(model: keras.Model) -> list[keras.Variable]:
    """The moving means and variances of the BatchNormalization layers that train (the others keep theirs)."""
    return [
        variable
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
        for variable in (layer.moving_mean, layer.moving_variance)
    ]


def save_model(model: keras.Model, target: str | Path) -> None:
    """Save a ``.keras`` file whose bytes depend only on the model (no save date, fixed zip times).

    DVC hashes outputs: a file that changed with the clock would rerun every downstream stage.
    """
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(target).parent) as scratch, atomic_path(target) as stable:
        raw = Path(scratch) / "raw.keras"
        model.save(raw)
        with zipfile.ZipFile(raw) as source, zipfile.ZipFile(stable, "w", zipfile.ZIP_DEFLATED) as out:
            for info in sorted(source.infolist(), key=lambda i: i.filename):
                data = source.read(info.filename)
                if info.filename == "metadata.json":
                    metadata = json.loads(data)
                    metadata.pop("date_saved", None)
                    data = json.dumps(metadata, sort_keys=True).encode()
                elif info.filename == "config.json":
                    config = json.loads(data)
                    _renumber_shared_objects(config, {})
                    data = json.dumps(config).encode()
                out.writestr(zipfile.ZipInfo(info.filename, date_time=_ZIP_EPOCH), data, zipfile.ZIP_DEFLATED)


def _renumber_shared_objects(node: object, ids: dict) -> None:
    """Keras names shared objects by their memory address; number them in order of appearance."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "shared_object_id":
                node[key] = ids.setdefault(value, len(ids) + 1)
            else:
                _renumber_shared_objects(value, ids)
    elif isinstance(node, list):
        for value in node:
            _renumber_shared_objects(value, ids)


def load_model(path: str | Path) -> keras.Model:
    """Load in Keras safe mode: a file that needs arbitrary code (a lambda layer) is refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; run the training stages first (dvc repro)")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "unsafe" in str(exc).lower():
            raise UserError(f"{path}: refused: loading it needs unsafe deserialisation (arbitrary code)") from None
        raise UserError(f"{path}: not a loadable Keras model: {' '.join(str(exc).split())[:300]}") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a loadable Keras model: {exc}") from None
