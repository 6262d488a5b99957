"""reports/MODEL_CARD.md from plain data: every section the issue asks for, intervals, stable bytes."""

from __future__ import annotations

import pytest

from inat_classifier.evaluate.evaluation import wilson_interval
from inat_classifier.evaluate.markdown import accuracy_interval
from inat_classifier.evaluate.model_card import render_model_card
from inat_classifier.params import parse_params

CLASSES = ["Catharus guttatus", "Catharus ustulatus", "Procyon lotor", "Sciurus carolinensis"]
METRICS = {
    "train": {"images": 1200, "accuracy": 0.96, "balanced_accuracy": 0.955, "macro_f1": 0.95, "log_loss": 0.12,
              "top_k_accuracy": 0.99, "top_k": 3},
    "test": {"images": 400, "accuracy": 0.9, "balanced_accuracy": 0.89, "macro_f1": 0.88, "log_loss": 0.3,
             "top_k_accuracy": 0.97, "top_k": 3},
}
SUMMARY = {
    "classes": 4,
    "skipped_images": 2,
    "train": {"images": 1020, "imbalance_ratio": 1.2, "per_class": dict(zip(CLASSES, [250, 270, 240, 260]))},
    "val": {"images": 180, "imbalance_ratio": 1.1, "per_class": dict(zip(CLASSES, [44, 47, 43, 46]))},
    "test": {"images": 400, "imbalance_ratio": 1.0, "per_class": dict(zip(CLASSES, [100] * 4))},
}
LICENSES = {"cc-by-nc": 1500, "cc-by": 300, "cc0": 200}
INAT = parse_params({"download": {"source": "inaturalist", "inaturalist": {"train_year": 2017, "test_year": 2018}},
                     "data": {"image_size": 224}, "model": {"weights": "imagenet"},
                     "train_head": {"epochs": 20, "learning_rate": 0.01}})


def card(params=INAT, **kwargs):
    return render_model_card(params, CLASSES, METRICS, SUMMARY, LICENSES, **kwargs)


@pytest.mark.parametrize(
    ("correct", "n", "low", "high"),
    [(5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (360, 400, 0.8667, 0.9257)],
)
def test_wilson_interval_matches_the_formula_values(correct, n, low, high):
    got = wilson_interval(correct, n)
    assert got == pytest.approx((low, high), abs=1e-4)
    assert got[0] <= correct / n <= got[1]


def test_wilson_interval_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    assert accuracy_interval({"images": 400, "accuracy": 0.9}) == wilson_interval(360, 400)
    assert accuracy_interval({"images": 0, "accuracy": 0.0}) is None
    # the exact interval from evaluate.json wins over one rebuilt from the rounded accuracy
    exact = {"images": 400, "accuracy": 0.9, "accuracy_ci_low": 0.8661, "accuracy_ci_high": 0.9259}
    assert accuracy_interval(exact) == (0.8661, 0.9259)


def test_metrics_with_per_class_entries_still_render():
    nested = {split: {**m, "ece": 0.05, "per_class": {"procyon_lotor": {"recall": 0.9}}} for split, m in METRICS.items()}
    text = render_model_card(INAT, CLASSES, nested, SUMMARY, LICENSES)
    assert "| test | 400 | 0.900 (0.867-0.926) |" in text and "procyon_lotor" not in text
    assert text.count("| 0.050 |") == 2  # ECE, as in reports/evaluate.md


def test_the_card_has_every_section_the_issue_asks_for():
    text = card()
    for heading in ["# Model card", "## Intended use", "## Training data", "### Licences and attribution",
                    "## Recipe and params", "## Metrics", "## Known limits", "## How to reproduce"]:
        assert heading in text
    for limit in ["Classes outside the list", "Tracks, scat", "Geography"]:
        assert limit in text


EXPORT = {
    "images": 400,
    "keras": {"path": "models/model.keras", "size_bytes": 44_471_106, "md5": "0637e8e3"},
    "saved_model": {"path": "models/export/saved_model", "size_bytes": 34_934_017, "top1_agreeing": 400,
                    "top1_agreement": 1.0, "max_probability_difference": 0.0},
    "tflite_float16": {"path": "models/export/model_float16.tflite", "size_bytes": 8_132_480, "top1_agreeing": 400,
                       "top1_agreement": 1.0, "max_probability_difference": 0.00268},
    "tflite_int8": {"path": "models/export/model_int8.tflite", "size_bytes": 4_571_720, "top1_agreeing": 398,
                    "top1_agreement": 0.995, "max_probability_difference": 0.052883},
}


def test_the_export_figures_of_this_model_or_how_to_get_them():
    shown = card(export=EXPORT)
    assert "## Exported formats" in shown and "(44.5 MB) and ran each on the 400 test images" in shown
    assert "| TFLite, float16 weights | `models/export/model_float16.tflite` | 8.1 MB | 100.00% | 0.0027 |" in shown
    assert "| TFLite, int8 weights (dynamic range) | `models/export/model_int8.tflite` | 4.6 MB | 99.50% | 0.0529 |" in shown
    missing = card()  # no figures, or another model's (export.figures_for)
    assert "Not exported yet for this model: `make export`" in missing and "| SavedModel" not in missing
    assert shown.index("## Metrics") < shown.index("## Exported formats") < shown.index("## Known limits")


def test_training_data_names_species_years_counts_and_where_attribution_lives():
    text = card()
    assert all(f"*{name}*" in text for name in CLASSES)
    assert "**2017**" in text and "**2018**" in text
    assert "| *Procyon lotor* | 240 | 43 | 100 |" in text
    assert "| **total** | 1020 | 180 | 400 |" in text
    assert "- CC BY-NC: 1500" in text and "- CC0 (no rights reserved): 200" in text
    assert "`data/raw/manifest.csv`" in text and "`attribution`" in text
    assert "evidence filter `not_other`" in text


def test_metrics_show_a_wilson_interval():
    text = card()
    assert "| test | 400 | 0.900 (0.867-0.926) | 0.890 | 0.880 | 0.970 | 0.300 | - |" in text
    assert "| top-3 accuracy | log loss | ECE |" in text


def test_recipe_shows_the_params_of_the_chosen_source_only():
    text = card()
    assert "Adam (epsilon 1e-07) at 0.01 for 20 epochs" in text and "weights `imagenet`" in text  # Keras' epsilon
    assert "image_size: 224" in text and "train_year: 2017" in text
    assert "sha256:" not in text and "grayscale_fraction" not in text  # other sources' settings left out


def test_the_sample_model_is_labelled_as_not_a_real_classifier():
    sample = card(params=parse_params({}))
    assert "trained on the generated offline sample" in sample and "not a classifier of real animals" in sample
    assert "trained on the generated offline sample" not in card()
    assert "Adam (epsilon 0.001, gradient norm capped at 10) at 0.005 with cosine" in sample  # a random base's Adam


def test_optional_inputs():
    bare = render_model_card(INAT, CLASSES, {}, None, None)
    assert "No split was evaluated" in bare and "Images per species" not in bare


def test_the_limits_follow_the_data_source():
    real = card()
    assert "Swainson's and Hermit Thrush" in real and "Geography" in real and "Tracks, scat" in real
    sample = render_model_card(parse_params({}), ["Aa", "Bb"], METRICS, None, {"cc0": 10})
    for inaturalist_only in ("Thrush", "iNaturalist", "Geography", "season", "Tracks, scat"):
        assert inaturalist_only not in sample.split("## Known limits")[1].split("## How to reproduce")[0]
    assert "Made-up species" in sample
    folder = render_model_card(parse_params({"download": {"source": "folder", "folder": {"path": "x"}}}), CLASSES,
                               METRICS, None, None)
    assert "Tracks, scat" in folder and "Geography" not in folder and "Swainson's and Hermit Thrush" in folder


def test_the_same_inputs_give_the_same_bytes():
    assert card() == card()
    assert card().endswith("\n") and not card().endswith("\n\n")


def test_each_class_links_to_its_inaturalist_page_where_its_id_is_known():
    from inat_classifier.data.taxonomy import Taxon, make

    taxa = [make(CLASSES[0], 12015, "species", "Hermit Thrush", {"genus": "Catharus"}), Taxon(CLASSES[1]),
            *(Taxon(name) for name in CLASSES[2:])]
    scored = {split: {**m, "genus_accuracy": 0.95, "family_accuracy": 0.975} for split, m in METRICS.items()}
    text = render_model_card(INAT, CLASSES, scored, SUMMARY, LICENSES, taxa=taxa)
    assert "[*Catharus guttatus*](https://www.inaturalist.org/taxa/12015) (Hermit Thrush), *Catharus ustulatus*," in text
    assert "genus train 0.950, test 0.950; family train 0.975, test 0.975" in text
    assert "inaturalist.org/taxa" not in card() and "genus train" not in card()  # names only: as before
