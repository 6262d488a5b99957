"""The model library on tiny inputs: BatchNorm care, freezing, stable bytes, safe loading, weights files."""

import re
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from inat_classifier.errors import UserError  # noqa: E402
from inat_classifier.train.model import (  # noqa: E402
    base_of,
    build_classifier,
    load_model,
    recalibrate_batchnorm,
    save_model,
    set_stochastic_depth,
    unfreeze,
)
from inat_classifier.train.recipe import adam_epsilon, batchnorm_trains, global_clipnorm, stochastic_depth, unfrozen_layers  # noqa: E402
from inat_classifier.params import ModelParams, parse_params  # noqa: E402
from inat_classifier.train.training import compile_model, make_deterministic  # noqa: E402

SIZE = 32


def images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    # Two kinds of picture: smooth and noisy, so features have something to tell apart.
    smooth = np.repeat(np.linspace(0, 255, SIZE)[None, :, None], SIZE, 0)[None].repeat(n // 2, 0)
    noisy = rng.uniform(0, 255, (n - n // 2, SIZE, SIZE, 1))
    return np.concatenate([smooth, noisy]).repeat(3, -1).astype("float32")


@pytest.fixture(scope="module")
def classifier():
    make_deterministic(0)
    return build_classifier(ModelParams(), num_classes=3, image_size=SIZE)


def test_a_random_base_in_inference_mode_sees_every_image_alike_until_recalibrated(classifier):
    base = base_of(classifier)
    x = images()
    before = base(x, training=False).numpy()
    assert before.std(axis=0).max() < 1e-3  # the documented trap: chance accuracy that looks like working code
    recalibrate_batchnorm(base, [x[i : i + 8] for i in range(0, len(x), 8)])
    after = base(x, training=False).numpy()
    assert after.std(axis=0).mean() > 0.05
    assert not np.allclose(after[0], after[-1])


def test_recalibrating_the_whole_classifier_also_fits_the_head_batchnorm():
    model = build_classifier(ModelParams(), num_classes=2, image_size=SIZE)
    x = images()
    recalibrate_batchnorm(model, [x])  # one batch: moving statistics = its statistics
    features = base_of(model)(x, training=False).numpy()
    head_mean = model.get_layer("head_bn").moving_mean.numpy()
    np.testing.assert_allclose(head_mean, features.mean(axis=0), rtol=1e-3, atol=1e-4)
    assert model.get_layer("head_dropout").rate == ModelParams().dropout


def test_recalibration_restores_momentum_and_trainable_flags(classifier):
    base = base_of(classifier)
    norms = [layer for layer in base._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert {layer.momentum for layer in norms} == {0.99}
    assert not any(layer.trainable for layer in norms)


def test_head_phase_trains_only_the_head_and_its_loss_falls(classifier):
    base = base_of(classifier)
    frozen = [w.numpy().copy() for w in base.weights[:5]]
    x, y = images(), np.array([0] * 8 + [1] * 8)
    compile_model(classifier, 1e-2)
    history = classifier.fit(x, y, epochs=6, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(frozen, base.weights[:5]))
    assert not base.trainable


@pytest.mark.parametrize("batchnorm_trains", [False, True])
def test_unfreeze_top_layers_and_batchnorm_modes(batchnorm_trains):
    model = build_classifier(ModelParams(), num_classes=2, image_size=SIZE)
    tuned = unfreeze(model, 20, batchnorm_trains)
    layers = base_of(tuned).layers
    assert not any(layer.trainable for layer in layers[:-20] if layer.weights)
    top_norms = [l for l in layers[-20:] if isinstance(l, keras.layers.BatchNormalization)]
    assert top_norms and all(l.trainable == batchnorm_trains for l in top_norms)
    assert any(l.trainable for l in layers[-20:] if l.weights and not isinstance(l, keras.layers.BatchNormalization))


def test_saved_model_bytes_depend_only_on_the_weights(classifier, tmp_path):
    save_model(classifier, tmp_path / "a.keras")
    save_model(classifier, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    # Keras writes memory addresses as shared object ids; other processes would get other bytes.
    config = zipfile.ZipFile(tmp_path / "a.keras").read("config.json").decode()
    assert max(int(n) for n in re.findall(r'"shared_object_id": (\d+)', config)) < 1000
    loaded = load_model(tmp_path / "a.keras")
    x = images(4)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), classifier.predict(x, verbose=0), atol=1e-5)


def test_safe_mode_refuses_a_model_that_needs_arbitrary_code(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match="lambda.keras: refused: loading it needs unsafe deserialisation"):
        load_model(tmp_path / "lambda.keras")


def test_missing_or_corrupt_model_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="model file not found"):
        load_model(tmp_path / "none.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="junk.keras: not a loadable Keras model"):
        load_model(tmp_path / "junk.keras")


def test_a_local_weights_file_is_loaded_into_the_base(tmp_path, monkeypatch):
    """The offline stand-in for ImageNet weights: a file the test itself saves."""
    monkeypatch.chdir(tmp_path)
    donor = build_classifier(ModelParams(), num_classes=2, image_size=SIZE)
    recalibrate_batchnorm(base_of(donor), [images()])  # make its statistics distinctive
    base_of(donor).save_weights("donor.weights.h5")
    params = parse_params({"model": {"weights": "donor.weights.h5"}})
    model = build_classifier(params.model, num_classes=2, image_size=SIZE)
    for mine, theirs in zip(base_of(model).weights, base_of(donor).weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_a_weights_file_that_does_not_fit_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    other.save_weights("other.weights.h5")
    params = parse_params({"model": {"weights": "other.weights.h5"}})
    with pytest.raises(UserError, match="model.weights: cannot load 'other.weights.h5' into EfficientNetB0") as caught:
        build_classifier(params.model, num_classes=2, image_size=SIZE)
    assert "\n" not in str(caught.value)


def test_batchnorm_auto_follows_the_weights():
    assert batchnorm_trains(parse_params({}).finetune, parse_params({}).model) is True
    params = parse_params({"model": {"weights": "imagenet"}})
    assert batchnorm_trains(params.finetune, params.model) is False
    params = parse_params({"model": {"weights": "imagenet"}, "finetune": {"batchnorm": "train"}})
    assert batchnorm_trains(params.finetune, params.model) is True


def test_unfreeze_auto_is_the_keras_examples_top_20_for_pretrained_weights_and_all_for_none():
    assert unfrozen_layers(parse_params({}).finetune, parse_params({}).model) == "all"
    params = parse_params({"model": {"weights": "imagenet"}})
    assert unfrozen_layers(params.finetune, params.model) == 20
    params = parse_params({"model": {"weights": "imagenet"}, "finetune": {"unfreeze": 7}})
    assert unfrozen_layers(params.finetune, params.model) == 7


def test_stochastic_depth_auto_is_keras_rate_for_pretrained_weights_and_off_for_a_random_base():
    assert stochastic_depth(parse_params({}).finetune, parse_params({}).model) == 0.0
    params = parse_params({"model": {"weights": "imagenet"}})
    assert stochastic_depth(params.finetune, params.model) == 0.2
    params = parse_params({"model": {"weights": "imagenet"}, "finetune": {"stochastic_depth": 0.1}})
    assert stochastic_depth(params.finetune, params.model) == 0.1
    params = parse_params({"model": {"weights": "imagenet"}, "finetune": {"stochastic_depth": None}})
    assert stochastic_depth(params.finetune, params.model) == 0.0  # null: off, as for every key


def test_adam_epsilon_auto_is_keras_one_for_pretrained_weights_and_larger_for_a_random_base():
    params = parse_params({})
    assert adam_epsilon(params.finetune, params.model) == adam_epsilon(params.train_head, params.model) == 1e-3
    params = parse_params({"model": {"weights": "imagenet"}})
    assert adam_epsilon(params.finetune, params.model) == keras.optimizers.Adam().epsilon == 1e-7
    params = parse_params({"model": {"weights": "imagenet"}, "finetune": {"adam_epsilon": "1e-4"}})  # YAML 1.1 text
    assert adam_epsilon(params.finetune, params.model) == 1e-4
    assert adam_epsilon(params.train_head, params.model) == 1e-7  # each phase its own


def test_global_clipnorm_auto_is_off_for_pretrained_weights_and_caps_a_random_base():
    params = parse_params({})
    assert global_clipnorm(params.finetune, params.model) == global_clipnorm(params.train_head, params.model) == 10.0
    params = parse_params({"model": {"weights": "imagenet"}, "finetune": {"global_clipnorm": 2.5}})
    assert global_clipnorm(params.train_head, params.model) is None  # the study's Adam: no cap
    assert global_clipnorm(params.finetune, params.model) == 2.5
    params = parse_params({"finetune": {"global_clipnorm": None}})
    assert global_clipnorm(params.finetune, params.model) is None  # null: off, as for every key


def test_set_stochastic_depth_rebuilds_keras_profile_and_zero_turns_block_dropping_off():
    def drop_rates(model):
        return {l.name: l.rate for l in base_of(model).layers if isinstance(l, keras.layers.Dropout)}

    model = build_classifier(ModelParams(), num_classes=2, image_size=SIZE)
    built = drop_rates(model)  # Keras' own, drop_connect_rate 0.2
    assert len(built) == 9 and max(built.values()) > 0.15
    set_stochastic_depth(model, 0.0)
    assert set(drop_rates(model).values()) == {0.0}
    x = images(4)
    base = base_of(model)
    np.testing.assert_array_equal(base(x, training=True), base(x, training=True))  # nothing dropped at random
    set_stochastic_depth(model, 0.2)  # from zero back to Keras' profile: rates are set, not scaled
    assert drop_rates(model) == pytest.approx(built)
    set_stochastic_depth(model, 0.6)
    assert not np.array_equal(base(x, training=True), base(x, training=True))


def test_unfreeze_by_block_trains_whole_blocks_from_block_n_up():
    model = build_classifier(ModelParams(), num_classes=2, image_size=SIZE)
    layers = base_of(unfreeze(model, "block6", True)).layers
    first = next(i for i, layer in enumerate(layers) if layer.name.startswith("block6a_"))
    assert not any(layer.trainable for layer in layers[:first] if layer.weights)
    assert layers[first - 1].name.startswith("block5")  # block 5 stays whole, and frozen
    trained = [layer.name for layer in layers[first:] if layer.weights and layer.trainable]
    assert trained[0].startswith("block6a_") and "top_conv" in trained and any(n.startswith("block7") for n in trained)
    with pytest.raises(UserError, match=r"finetune.unfreeze: the base has no layer block9a_\* \(its blocks: block1, "):
        unfreeze(build_classifier(ModelParams(), num_classes=2, image_size=SIZE), "block9", True)
