"""Stage 6: export the fine-tuned model (SavedModel, TFLite float16 and int8) and check each on the test split."""

from inat_classifier import stage
from inat_classifier.atomic import write_json
from inat_classifier.dataset import load_split
from inat_classifier.errors import UserError
from inat_classifier.export import check_agreement, export_model, summary
from inat_classifier.model import load_model
from inat_classifier.params import Params
from inat_classifier.predict import input_size, load_class_names

MODEL = "models/model.keras"


def main(params: Params) -> None:
    model = load_model(MODEL)
    if input_size(model) != params.data.image_size:
        raise UserError(f"{MODEL} takes {input_size(model)} px images, data.image_size is {params.data.image_size}")
    test = load_split("test", params)
    report = export_model(
        model, "models/export", test.pixels, load_class_names(MODEL), params.data.batch_size, model_path=MODEL
    )
    write_json("metrics/export.json", report)
    print(summary(report))
    check_agreement(report)  # float16 TFLite and the SavedModel must agree on >= 99% of the test images


if __name__ == "__main__":
    stage.run(main)
