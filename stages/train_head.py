"""Stage 3: train a new head on the frozen EfficientNetB0 base (the study's first phase)."""

from inat_classifier import stage

params = stage.validate()  # before the imports below load TensorFlow: a params typo prints one line, nothing else
stage.choose_cpu_kernels(params.train.onednn, params.data.image_size)  # TensorFlow reads it once, when it loads

from inat_classifier.data.classnames import subset_classes
from inat_classifier.train.dataset import batches, images_only, load_split
from inat_classifier.train.distribute import is_chief, leave_together, strategy_for
from inat_classifier.layout import HEAD_MODEL, MANIFEST_FILE, RAW_DIR, split_file
from inat_classifier.train.features import FrozenBaseHead, base_features, feature_batches, head_model
from inat_classifier.train.model import build_classifier, recalibrate_batchnorm, save_model
from inat_classifier.train.recipe import adam_epsilon, global_clipnorm
from inat_classifier.params import Params
from inat_classifier.train.training import (
    class_weights,
    compile_model,
    fingerprint,
    fit,
    learning_rate,
    make_deterministic,
    use_device,
)


def main(params: Params) -> None:
    jit_compile = use_device(params.train)
    make_deterministic(params.seed, ops=not jit_compile)  # Keras compiles no XLA under deterministic ops
    strategy = strategy_for(params.train)  # first: multi_worker must set up before any TensorFlow op
    config = params.train_head
    classes = subset_classes()
    data, seed = params.data, params.seed
    train, val = load_split("train", data), load_split("val", data)
    with strategy.scope():  # models made from its layers (head, frozen base) train under it too
        model = build_classifier(params.model, len(classes), data.image_size)
    if not params.model.pretrained:
        # A random base has no real BatchNorm statistics; without these every image looks the same.
        recalibrate_batchnorm(model, images_only(train, data, seed))
    if config.feature_cache:  # the base is frozen: run it once per view, then train the head alone
        trained = head_model(model)
        train_features = base_features(model, train, data, seed, params.augment, config.feature_cache)
        train_data = feature_batches(train_features, train.labels, data, seed, shuffle=True)
        val_data = feature_batches(base_features(model, val, data, seed, params.augment, 1), val.labels, data, seed, shuffle=False)
    else:
        trained = FrozenBaseHead(model)
        train_data = batches(train, data, seed, shuffle=True, augment=params.augment)
        val_data = batches(val, data, seed, shuffle=False)
    rate = learning_rate(config, train_data.steps(strategy.num_replicas_in_sync))
    compile_model(trained, rate, jit_compile, label_smoothing=config.label_smoothing, weight_decay=config.weight_decay,
                  use_ema=config.use_ema, epsilon=adam_epsilon(config, params.model),
                  clipnorm=global_clipnorm(config, params.model))
    stamp = fingerprint(params, split_file("train"), split_file("val"), RAW_DIR / MANIFEST_FILE)
    weights = class_weights(config.class_weight, train.labels, len(classes))
    fit(trained, train_data, val_data, config.epochs, "train_head", stamp, class_weight=weights)
    if is_chief(strategy):  # every worker holds these weights; one writes them
        save_model(model, HEAD_MODEL)
    leave_together(strategy)


if __name__ == "__main__":
    stage.run(main)
