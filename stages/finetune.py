"""Stage 4: unfreeze the base and fine-tune the whole classifier at a lower learning rate."""

from inat_classifier import stage
from inat_classifier.dataset import batches, load_split, read_classes
from inat_classifier.model import load_model, recalibrate_batchnorm, save_model, unfreeze
from inat_classifier.params import Params
from inat_classifier.predict import save_class_names
from inat_classifier.training import LIVE_DIR, compile_model, fit, make_deterministic


def main(params: Params) -> None:
    make_deterministic(params.seed)
    config = params.finetune
    batchnorm_trains = config.batchnorm_trains(params.model)
    train, val = load_split("train", params), load_split("val", params)
    model = unfreeze(load_model("models/head.keras"), config.unfreeze, batchnorm_trains)
    compile_model(model, config.learning_rate)
    fit(
        model,
        batches(train, params, training=True),
        batches(val, params, training=False),
        config.epochs,
        LIVE_DIR / "finetune",
        patience=config.early_stopping_patience,
    )
    if batchnorm_trains:
        # Moving statistics lag weights that changed fast; match them to the final weights.
        recalibrate_batchnorm(model, train.pixels)
    save_model(model, "models/model.keras")
    save_class_names("models/model.keras", read_classes())  # so predict needs nothing but the model


if __name__ == "__main__":
    stage.run(main)
