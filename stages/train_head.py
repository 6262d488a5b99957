"""Stage 3: train a new head on the frozen EfficientNetB0 base (the study's first phase)."""

from inat_classifier import stage
from inat_classifier.dataset import batches, load_split, read_classes
from inat_classifier.model import build_classifier, recalibrate_batchnorm, save_model
from inat_classifier.params import Params
from inat_classifier.training import LIVE_DIR, compile_model, fit, make_deterministic


def main(params: Params) -> None:
    make_deterministic(params.seed)
    classes = read_classes()
    train, val = load_split("train", params), load_split("val", params)
    model = build_classifier(params.model, len(classes), params.data.image_size)
    if not params.model.pretrained:
        # A random base has no real BatchNorm statistics; without these every image looks the same.
        recalibrate_batchnorm(model, train.pixels)
    compile_model(model, params.train_head.learning_rate)
    fit(
        model,
        batches(train, params, training=True),
        batches(val, params, training=False),
        params.train_head.epochs,
        LIVE_DIR / "train_head",
    )
    save_model(model, "models/head.keras")


if __name__ == "__main__":
    stage.run(main)
