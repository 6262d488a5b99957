"""Stage 5: score the fine-tuned model on each split once, then derive every metrics file, plot data,
the per-image predictions (which `inat-classifier compare` pairs across runs), the Markdown report
with its gallery and the model card from it."""

from inat_classifier import stage

stage.validate()  # before the imports below load TensorFlow: a params typo prints one line, nothing else

import json
import numpy as np

from inat_classifier.atomic import write_csv, write_json, write_text
from inat_classifier.classnames import subset_taxa
from inat_classifier.dataset import batches, load_split
from inat_classifier.evaluation import (
    confusion_rows,
    most_confused_pairs,
    per_class_table,
    prediction_rows,
    recall_rows,
    reliability_rows,
    split_metrics,
)
from inat_classifier.layout import MODEL, SPLITS, SUBSET_METRICS
from inat_classifier.manifest import photo_credits, read_manifest, read_report, showing_forbidden
from inat_classifier.model import load_model
from inat_classifier.model_card import render_model_card
from inat_classifier.params import Params
from inat_classifier.report import SplitReport, draw_gallery, render_report, worst_misclassified
from inat_classifier.taxonomy import rank_accuracies

def main(params: Params) -> None:
    taxa = subset_taxa()
    classes = [taxon.name for taxon in taxa]
    model = load_model(MODEL)
    top_k = min(params.evaluate.top_k, len(classes))  # the default, 3, with 2 classes: 2
    results, reports = {}, {}
    manifest = read_manifest()
    for name in SPLITS:  # dvc.yaml declares every file of each, evaluated or not
        if name in params.evaluate.splits:
            split = load_split(name, params.data)
            labels, paths = split.labels, split.paths
            ordered = batches(split, params.data, params.seed, shuffle=False).dataset
            probs = model.predict(ordered, verbose=0)
            # float32 softmax rows sum to 1 only to float32 precision; scikit-learn checks at float64's
            probs = probs.astype(np.float64)
            probs /= probs.sum(axis=1, keepdims=True)
            results[name] = split_metrics(labels, probs, top_k, classes)
            results[name].update(rank_accuracies(labels, probs, taxa))  # genus, family: where known
            shown = {k: v for k, v in results[name].items() if k != "per_class"}
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        else:  # not evaluated: header-only files, so stale numbers never linger
            labels, probs, paths = np.zeros(0, np.int32), np.zeros((0, len(classes)), np.float32), []
        table = per_class_table(labels, probs, classes)
        write_csv(f"metrics/per_class_{name}.csv", table)
        write_csv(f"metrics/confusion_{name}.csv", confusion_rows(labels, probs, classes))
        write_csv(f"metrics/recall_{name}.csv", recall_rows(labels, probs, classes))
        if name in results:
            reports[name] = SplitReport(results[name], table, most_confused_pairs(labels, probs, classes))
        predictions = prediction_rows(paths, labels, probs, classes, top_k, photo_credits(paths, manifest))
        write_csv(f"metrics/predictions_{name}.csv", predictions)
        if name == "test":
            write_csv("metrics/reliability_test.csv", reliability_rows(labels, probs))
            worst = worst_misclassified(predictions)  # empty when test is not evaluated: a placeholder PNG
    # Licences of the downloaded images: what sharing them (or a report showing them) requires.
    results["licenses"] = read_report()["licenses"]
    write_json("metrics/evaluate.json", results)

    tested = "test" in results
    message = "no misclassified test images" if tested else "the test split was not evaluated"
    forbidden = showing_forbidden(params.download.source, params.download.archive.layout)
    if forbidden and not worst.empty:  # listed in the report instead, with their credits
        worst_drawn, message = worst.iloc[:0], f"{len(worst)} photos not drawn: their terms forbid it (see evaluate.md)"
    else:
        worst_drawn = worst
    draw_gallery(worst_drawn, "reports/worst_test.png", params.data.max_pixels, empty_message=message)
    summary = json.loads(SUBSET_METRICS.read_text())
    report = render_report(reports, worst if tested else None, "worst_test.png", summary, forbidden)
    write_text("reports/evaluate.md", report)
    scored = {name: results[name] for name in SPLITS if name in results}
    write_text("reports/MODEL_CARD.md", render_model_card(params, classes, scored, summary, results["licenses"], taxa))


if __name__ == "__main__":
    stage.run(main)
