"""Stage 5: score the fine-tuned model on each split; write metrics, per-class tables, confusion data."""

import json
from pathlib import Path

import numpy as np

from inat_classifier import stage
from inat_classifier.atomic import write_csv, write_json, write_text
from inat_classifier.dataset import load_split, read_classes
from inat_classifier.evaluation import confusion_rows, per_class_table, split_metrics
from inat_classifier.manifest import read_report
from inat_classifier.model import load_model
from inat_classifier.model_card import render_model_card
from inat_classifier.params import Params

SPLITS = ("train", "val", "test")  # dvc.yaml declares a table and a confusion file for each


def main(params: Params) -> None:
    classes = read_classes()
    model = load_model("models/model.keras")
    results = {}
    for name in SPLITS:
        if name in params.evaluate.splits:
            split = load_split(name, params)
            labels = split.labels
            probs = model.predict(split.pixels.astype("float32"), batch_size=params.data.batch_size, verbose=0)
            results[name] = split_metrics(labels, probs, params.evaluate.top_k)
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in results[name].items()))
        else:  # not evaluated: header-only files, so stale numbers never linger
            labels, probs = np.zeros(0, np.int32), np.zeros((0, len(classes)), np.float32)
        write_csv(f"metrics/per_class_{name}.csv", per_class_table(labels, probs, classes))
        write_csv(f"metrics/confusion_{name}.csv", confusion_rows(labels, probs, classes))
    # Licences of the downloaded images: what sharing them (or a report showing them) requires.
    results["licenses"] = read_report()["licenses"]
    write_json("metrics/evaluate.json", results)
    summary = json.loads(Path("metrics/subset.json").read_text())
    scored = {name: results[name] for name in SPLITS if name in results}
    write_text("reports/MODEL_CARD.md", render_model_card(params, classes, scored, summary, results["licenses"]))


if __name__ == "__main__":
    stage.run(main)
