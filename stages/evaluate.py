"""Stage 5: score the fine-tuned model on each split once, then derive every metrics file, the plot
data and the per-image predictions (which `inat-classifier compare` pairs across runs and the report
stage reads) from those scores. It reads only the params scoring needs: the report stage renders."""

from inat_classifier import stage

params = stage.validate()  # before the imports below load TensorFlow: a params typo prints one line, nothing else
stage.choose_cpu_kernels(params.train.onednn, params.data.image_size)  # the kernels the model trained with

import numpy as np

from inat_classifier.atomic import write_csv, write_json
from inat_classifier.data.classnames import subset_taxa
from inat_classifier.data.taxonomy import rank_accuracies
from inat_classifier.train.dataset import load_split
from inat_classifier.train.features import view_outputs
from inat_classifier.evaluate.evaluation import (
    confusion_rows,
    per_class_table,
    prediction_rows,
    recall_rows,
    reliability_rows,
    split_metrics,
)
from inat_classifier.layout import EVALUATE_METRICS, MODEL, SPLITS, metrics_file
from inat_classifier.data.manifest import photo_credits, read_manifest, read_report
from inat_classifier.train.model import load_model
from inat_classifier.params import Params


def main(params: Params) -> None:
    taxa = subset_taxa()
    classes = [taxon.name for taxon in taxa]
    model = load_model(MODEL)
    top_k = min(params.evaluate.top_k, len(classes))  # the default, 3, with 2 classes: 2
    results = {}
    manifest = read_manifest()
    for name in SPLITS:  # dvc.yaml declares every file of each, evaluated or not
        if name in params.evaluate.splits:
            split = load_split(name, params.data)
            labels, paths = split.labels, split.paths
            # evaluate.tta: the mean over the plain view and tta - 1 augmented ones
            views = view_outputs(model, split, params.data, params.seed, params.augment, params.evaluate.tta or 1, "predictions")
            probs = views.mean(axis=0)
            # float32 softmax rows sum to 1 only to float32 precision; scikit-learn checks at float64's
            probs = probs.astype(np.float64)
            probs /= probs.sum(axis=1, keepdims=True)
            results[name] = split_metrics(labels, probs, top_k, classes)
            results[name].update(rank_accuracies(labels, probs, taxa))  # genus, family: where known
            shown = {k: v for k, v in results[name].items() if k != "per_class"}
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        else:  # not evaluated: header-only files, so stale numbers never linger
            labels, probs, paths = np.zeros(0, np.int32), np.zeros((0, len(classes)), np.float32), []
        write_csv(metrics_file("per_class", name), per_class_table(labels, probs, classes))
        write_csv(metrics_file("confusion", name), confusion_rows(labels, probs, classes))
        write_csv(metrics_file("recall", name), recall_rows(labels, probs, classes))
        predictions = prediction_rows(paths, labels, probs, classes, top_k, photo_credits(paths, manifest))
        write_csv(metrics_file("predictions", name), predictions)
        if name == "test":
            write_csv(metrics_file("reliability", name), reliability_rows(labels, probs))
    # Licences of the downloaded images: what sharing them (or a report showing them) requires.
    results["licenses"] = read_report()["licenses"]
    write_json(EVALUATE_METRICS, results)


if __name__ == "__main__":
    stage.run(main)
