"""Stage 4: unfreeze the base and fine-tune the whole classifier at a lower learning rate."""

from inat_classifier import stage
from inat_classifier.train.recipe import choose_fusion

params = stage.validate()  # before the imports below load TensorFlow: a params typo prints one line, nothing else
stage.choose_cpu_kernels(params.train.onednn, params.data.image_size)  # TensorFlow reads it once, when it loads
choose_fusion(params.train, params.data.image_size, params.finetune, params.model)  # train.fuse_elementwise: XLA's flags

from inat_classifier.data.classnames import save_beside, subset_taxa
from inat_classifier.train.augment import build_mixer
from inat_classifier.train.dataset import batches, images_only, load_split
from inat_classifier.train.distribute import chief_file, is_chief, leave_together, strategy_for
from inat_classifier.layout import HEAD_MODEL, MANIFEST_FILE, MODEL, RAW_DIR, split_file
from inat_classifier.errors import DataError
from inat_classifier.train.model import load_model, recalibrate_batchnorm, save_model, set_stochastic_depth, under_current_policy, unfreeze
from inat_classifier.train.recipe import adam_epsilon, batchnorm_trains, global_clipnorm, stochastic_depth, unfrozen_layers
from inat_classifier.params import Params
from inat_classifier.train.training import (
    batch_pieces,
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
    config, data, seed = params.finetune, params.data, params.seed
    trains_batchnorm = batchnorm_trains(config, params.model)
    train, val = load_split("train", data), load_split("val", data)
    with strategy.scope(), chief_file(strategy, HEAD_MODEL) as head:  # the chief's head.keras, on every worker
        model = under_current_policy(load_model(head), params.model)
        if model.input_shape[1] != data.image_size:  # data.image_size is the one source of the size
            raise DataError(f"{HEAD_MODEL} takes {model.input_shape[1]} px images, data.image_size is {data.image_size}: "
                            "rerun train_head (dvc repro)")
        stamp = fingerprint(params, head, split_file("train"), split_file("val"), RAW_DIR / MANIFEST_FILE)
    model = unfreeze(model, unfrozen_layers(config, params.model), trains_batchnorm)
    set_stochastic_depth(model, stochastic_depth(config, params.model))
    classes = model.output_shape[-1]
    mixer = build_mixer(config.mixup, config.cutmix, classes)  # None unless MixUp or CutMix is on
    replicas = strategy.num_replicas_in_sync
    pieces, piece = batch_pieces(model, data, replicas)  # on a CPU, pieces whose activations fit the budget
    train_data = batches(train, data, seed, shuffle=True, augment=params.augment, mix=mixer, batch_size=piece)
    val_data = batches(val, data, seed, shuffle=False)
    rate = learning_rate(config, train_data.steps(replicas))  # counts pieces, as Keras' schedule does
    compile_model(model, rate, jit_compile, label_smoothing=config.label_smoothing, weight_decay=config.weight_decay,
                  use_ema=config.use_ema, soft_labels=mixer is not None, accumulation=pieces,
                  epsilon=adam_epsilon(config, params.model), clipnorm=global_clipnorm(config, params.model))
    fit(
        model,
        train_data,
        val_data.one_hot(classes) if mixer else val_data,
        config.epochs,
        "finetune",
        stamp,
        patience=config.early_stopping_patience,
        first_step=params.train_head.epochs,  # one axis for both phases
        class_weight=class_weights(config.class_weight, train.labels, classes),
    )
    if trains_batchnorm:
        # Moving statistics lag weights that changed fast; match them to the final weights.
        recalibrate_batchnorm(model, images_only(train, data, seed))
    if is_chief(strategy):  # every worker holds these weights; one writes them
        save_model(model, MODEL)
        save_beside(MODEL, subset_taxa())  # so predict needs nothing but the model
    leave_together(strategy)


if __name__ == "__main__":
    stage.run(main)
