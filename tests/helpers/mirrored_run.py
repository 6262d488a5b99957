"""Two replicas on one CPU, split in two logical devices: ``train.distribute: mirrored`` on two GPUs.

Run as a subprocess by test_distribute.py (devices are split before TensorFlow starts): trains a
head for two epochs through ``training.fit`` and prints, as one JSON line, what the test checks.
"""

import json

import numpy as np
import tensorflow as tf

from inat_classifier.train.dataset import Split, images_only
from inat_classifier.train.distribute import fix_keras_fit
from inat_classifier.train.features import base_features, feature_batches, head_model
from inat_classifier.train.model import build_classifier, moving_statistics, recalibrate_batchnorm
from inat_classifier.params import parse_params
from inat_classifier.train.training import compile_model, fit, make_deterministic


def split(name: str, count: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(name, rng.integers(0, 255, (count, 32, 32, 3), dtype=np.uint8), np.arange(count, dtype=np.int32) % 3, [], [])


def main() -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    params = parse_params({"data": {"image_size": 32, "batch_size": 8}})
    make_deterministic(params.seed)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    fix_keras_fit()
    train, val = split("train", 33, 0), split("val", 9, 1)  # last batches of 1: a replica gets none
    with strategy.scope():
        model = build_classifier(params.model, 3, 32)
    recalibrate_batchnorm(model, images_only(train, params.data, params.seed))
    train_features, val_features = base_features(model, train, params.data, params.seed, params.augment, 2), base_features(model, val, params.data, params.seed, params.augment, 1)
    head = head_model(model)
    compile_model(head, 1e-2)
    history = fit(head, feature_batches(train_features, train.labels, params.data, params.seed, True),
                  feature_batches(val_features, val.labels, params.data, params.seed, False), 2, "head", "mirrored")
    copies = [[c.numpy() for c in strategy.experimental_local_results(v.value)] for v in moving_statistics(head)]
    one_device = head_model(build_classifier(params.model, 3, 32))  # outside the strategy
    one_device.set_weights(head.get_weights())
    compile_model(one_device, 1e-2)
    scores = one_device.evaluate(feature_batches(val_features, val.labels, params.data, params.seed, False).dataset, verbose=0, return_dict=True)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "history": history.history,
        "statistics": len(copies),
        "copies_equal": all(np.array_equal(first, second) for first, second in copies),
        "one_device_val": scores,
    }))


if __name__ == "__main__":
    main()
