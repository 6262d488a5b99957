"""Stage 6: the Markdown report with its gallery and the model card, from the evaluate stage's files
(no model is run: a change of a param the card restates reruns only this stage), and the export
figures of `make export` when they were measured on this model."""

from inat_classifier import stage

stage.validate()  # before the imports below load Keras (the card states model.py's policy)

import json

import pandas as pd

from inat_classifier.atomic import write_text
from inat_classifier.data.classnames import subset_taxa
from inat_classifier.serve.export import figures_for
from inat_classifier.layout import EVALUATE_METRICS, EXPORT_METRICS, MODEL, SPLITS, SUBSET_METRICS, metrics_file
from inat_classifier.data.manifest import showing_forbidden
from inat_classifier.evaluate.model_card import render_model_card
from inat_classifier.params import Params
from inat_classifier.evaluate.report import SplitReport, draw_gallery, most_confused_pairs, render_report, worst_misclassified


def read_table(kind: str, split: str) -> pd.DataFrame:
    """A metrics csv as the evaluate stage wrote it (empty credits and a class named NA stay strings)."""
    return pd.read_csv(metrics_file(kind, split), keep_default_na=False)


def main(params: Params) -> None:
    taxa = subset_taxa()
    classes = [taxon.name for taxon in taxa]
    results = json.loads(EVALUATE_METRICS.read_text())
    summary = json.loads(SUBSET_METRICS.read_text())
    scored = {name: results[name] for name in SPLITS if name in results}
    predictions = {name: read_table("predictions", name) for name in scored}
    reports = {
        name: SplitReport(
            scored[name], read_table("per_class", name), most_confused_pairs(rows["true"], rows["predicted"])
        )
        for name, rows in predictions.items()
    }

    tested = "test" in scored
    worst = worst_misclassified(predictions["test"]) if tested else None
    message = "no misclassified test images" if tested else "the test split was not evaluated"
    forbidden = showing_forbidden(params.download.source, params.download.archive.layout)
    drawn = worst if worst is not None else pd.DataFrame()
    if forbidden and not drawn.empty:  # listed in the report instead, with their credits
        drawn, message = drawn.iloc[:0], f"{len(drawn)} photos not drawn: their terms forbid it (see evaluate.md)"
    draw_gallery(drawn, "reports/worst_test.png", params.data.max_pixels, empty_message=message)
    write_text("reports/evaluate.md", render_report(reports, worst, "worst_test.png", summary, forbidden))
    export = figures_for(MODEL, EXPORT_METRICS)
    card = render_model_card(params, classes, scored, summary, results["licenses"], export, taxa)
    write_text("reports/MODEL_CARD.md", card)


if __name__ == "__main__":
    stage.run(main)
