import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    recall_score,
)

from inat_classifier.evaluate import markdown
from inat_classifier.evaluate.evaluation import (
    confusion_rows,
    expected_calibration_error,
    per_class_table,
    prediction_columns,
    prediction_rows,
    recall_rows,
    reliability_rows,
    slug,
    slugs,
    split_metrics,
    wilson_interval,
)

LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.4, 0.5, 0.1],
        [0.6, 0.1, 0.3],
        [0.2, 0.7, 0.1],
        [0.35, 0.05, 0.6],
        [0.1, 0.1, 0.8],
        [0.3, 0.3, 0.4],
        [0.5, 0.2, 0.3],
        [0.2, 0.2, 0.6],
        [0.2, 0.6, 0.2],
    ]
)
NAMES = ["Anas platyrhynchos", "Catharus ustulatus", "Vulpes vulpes"]
# predicted = [0, 1, 0, 1, 2, 2, 2, 0, 2, 1]: mistakes are images 1 (Anas -> Catharus),
# 4 (Catharus -> Vulpes) and 7 (Vulpes -> Anas).


def random_case(n=300, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    probs = rng.dirichlet(np.ones(classes) * 0.7, n)
    probs[np.arange(n), labels] += rng.uniform(0, 0.8, n)  # better than chance, not calibrated
    return labels, probs / probs.sum(1, keepdims=True)


def wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


# --- headline metrics -------------------------------------------------------------------------


def test_headline_metrics_match_scikit_learn_and_a_hand_count():
    metrics = split_metrics(LABELS, PROBS, top_k=2)
    predicted = PROBS.argmax(1)
    assert metrics["images"] == 10
    assert metrics["accuracy"] == pytest.approx(0.7) == accuracy_score(LABELS, predicted)
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(LABELS, predicted), abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(f1_score(LABELS, predicted, average="macro"), abs=1e-6)
    assert metrics["weighted_f1"] == pytest.approx(f1_score(LABELS, predicted, average="weighted"), abs=1e-6)
    assert metrics["log_loss"] == pytest.approx(log_loss(LABELS, PROBS), abs=1e-6)
    # top-2 by hand: every true class is among the two highest scores except image 4 (true 1, 0.05)
    assert metrics["top_k_accuracy"] == pytest.approx(0.9) and metrics["top_k"] == 2
    assert "loss" not in metrics and "top_2_accuracy" not in metrics  # one key whatever k is
    # 7 of 10 correct: the Wilson interval by the formula, and its published value
    assert (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == pytest.approx(wilson_by_hand(7, 10), abs=1e-6)
    assert (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert metrics["ece"] == pytest.approx(expected_calibration_error(LABELS, PROBS), abs=1e-6)
    assert "per_class" not in metrics
    assert all(round(v, 6) == v for v in metrics.values() if isinstance(v, float))


def test_metrics_on_a_larger_random_case_match_scikit_learn():
    labels, probs = random_case()
    metrics = split_metrics(labels, probs, top_k=3)
    predicted = probs.argmax(1)
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-6)
    assert metrics["weighted_f1"] == pytest.approx(f1_score(labels, predicted, average="weighted"), abs=1e-6)
    assert metrics["log_loss"] == pytest.approx(log_loss(labels, probs), abs=1e-6)
    correct = int((predicted == labels).sum())
    assert (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == pytest.approx(
        wilson_by_hand(correct, len(labels)), abs=1e-6
    )


def test_a_split_missing_a_class_is_scored_against_all_classes():
    labels, probs = LABELS[LABELS < 2], PROBS[LABELS < 2]  # no Vulpes in this split
    metrics = split_metrics(labels, probs, top_k=2, class_names=NAMES)
    predicted = probs.argmax(1)
    assert metrics["log_loss"] == pytest.approx(log_loss(labels, probs, labels=[0, 1, 2]), abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(labels, predicted, labels=[0, 1, 2], average="macro", zero_division=0), abs=1e-6
    )
    with pytest.warns(UserWarning):  # scikit-learn warns about the predicted-only class; we do not
        expected = balanced_accuracy_score(labels, predicted)
    assert metrics["balanced_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert metrics["per_class"]["vulpes_vulpes"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_two_classes_work_including_a_split_with_only_one_of_them():
    probs = np.array([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    metrics = split_metrics(np.array([0, 1, 1]), probs, top_k=1, class_names=["A a", "B b"])
    assert metrics["accuracy"] == metrics["top_k_accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    with pytest.warns(UserWarning, match="perfect score"):  # k = classes: scikit-learn says it is meaningless
        assert split_metrics(np.array([0, 1, 1]), probs, top_k=2)["top_k_accuracy"] == 1.0
    assert split_metrics(np.array([1, 1, 1]), probs, top_k=1)["top_k_accuracy"] == pytest.approx(1 / 3, abs=1e-6)


def test_per_class_metrics_are_keyed_by_slug_and_match_scikit_learn():
    metrics = split_metrics(LABELS, PROBS, top_k=1, class_names=NAMES)
    per_class = metrics["per_class"]
    assert list(per_class) == ["anas_platyrhynchos", "catharus_ustulatus", "vulpes_vulpes"]
    precision, recall, f1, support = precision_recall_fscore_support(LABELS, PROBS.argmax(1))
    for i, entry in enumerate(per_class.values()):
        assert entry["precision"] == pytest.approx(precision[i], abs=1e-6)
        assert entry["recall"] == pytest.approx(recall[i], abs=1e-6)
        assert entry["f1"] == pytest.approx(f1[i], abs=1e-6)
        assert entry["support"] == support[i] and isinstance(entry["support"], int)
    assert sum(entry["support"] for entry in per_class.values()) == metrics["images"]
    # by hand: Vulpes has 4 images, 3 found; 4 predicted Vulpes, 3 right
    assert per_class["vulpes_vulpes"]["recall"] == 0.75 and per_class["vulpes_vulpes"]["precision"] == 0.75


def test_bad_inputs_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="^no images$"):
        split_metrics(np.zeros(0, int), np.zeros((0, 3)), top_k=1)
    with pytest.raises(ValueError, match="no images"):
        expected_calibration_error([], np.zeros((0, 3)))
    with pytest.raises(ValueError, match="class names"):
        split_metrics(LABELS, PROBS, top_k=1, class_names=NAMES[:2])
    with pytest.raises(ValueError, match="shape"):
        split_metrics(LABELS[:3], PROBS, top_k=1)
    with pytest.raises(ValueError, match="class ids"):
        split_metrics(np.array([0, 3]), PROBS[:2], top_k=1)


# --- Wilson interval --------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(7, 10), (1, 3), (360, 400), (999, 1000)])
def test_wilson_interval_is_the_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson_by_hand(k, n), abs=1e-12)


def test_wilson_interval_known_values_and_edges():
    # 7/10: centre (0.7 + 1.9208/10) / 1.38415 = 0.64449, half 1.96 * sqrt(0.0306037) / 1.38415 = 0.24772
    assert wilson_interval(7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(7, 10, z=1.0) == pytest.approx(wilson_by_hand(7, 10, z=1.0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    assert markdown.wilson_interval is wilson_interval  # one definition, shared with the report and the card


# --- calibration ------------------------------------------------------------------------------

# Five images, three classes, five bins (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]:
#   conf 0.9 right -> (.8, 1]   conf 0.8 wrong -> (.6, .8] (edge: closes that bin)
#   conf 0.6 right, 0.5 right -> (.4, .6]   conf 0.4 wrong -> (.2, .4]
# ECE = (1*|1-.9| + 1*|0-.8| + 2*|1-.55| + 1*|0-.4|) / 5 = (.1 + .8 + .9 + .4) / 5 = 0.44
ECE_LABELS = np.array([0, 1, 1, 2, 0])
ECE_PROBS = np.array(
    [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.4, 0.35, 0.25], [0.5, 0.3, 0.2]]
)


def test_ece_by_hand_with_bins_closed_on_the_right():
    assert expected_calibration_error(ECE_LABELS, ECE_PROBS, bins=5) == pytest.approx(0.44)
    rows = reliability_rows(ECE_LABELS, ECE_PROBS, bins=5)
    assert rows.bin.tolist() == [0.4, 0.6, 0.8, 1.0]  # (0, .2] is empty and left out
    assert rows.confidence.tolist() == pytest.approx([0.4, 0.55, 0.8, 0.9])
    assert rows.accuracy.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert rows.images.tolist() == [1, 2, 1, 1]


def test_a_zero_confidence_falls_in_the_first_bin():
    rows = reliability_rows([0], np.zeros((1, 2)), bins=4)
    assert rows.bin.tolist() == [0.25] and rows.images.tolist() == [1]


def test_perfect_calibration_has_zero_ece():
    # two bins' worth: confidence 1.0 always right; confidence 0.5 right half the time
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
    assert expected_calibration_error(labels, probs) == pytest.approx(0.0)


def test_reliability_rows_match_scikit_learn_calibration_curve_and_ece_a_plain_loop():
    labels, probs = random_case(seed=1)
    rows = reliability_rows(labels, probs, bins=15)
    confidence, hit = probs.max(1), (probs.argmax(1) == labels).astype(float)
    accuracy, mean_confidence = calibration_curve(hit, confidence, n_bins=15, strategy="uniform")
    assert rows.accuracy.tolist() == pytest.approx(accuracy, abs=1e-6)
    assert rows.confidence.tolist() == pytest.approx(mean_confidence, abs=1e-6)
    assert rows.images.sum() == len(labels)
    ece = 0.0
    for i in range(15):
        lo, hi = i / 15, (i + 1) / 15
        inside = (confidence > lo) & (confidence <= hi) if i else (confidence <= hi)
        if inside.any():
            ece += abs(hit[inside].mean() - confidence[inside].mean()) * inside.sum() / len(labels)
    assert expected_calibration_error(labels, probs, bins=15) == pytest.approx(ece, abs=1e-12)
    with pytest.raises(ValueError, match="bins"):
        reliability_rows(labels, probs, bins=0)


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Catharus ustulatus", "catharus_ustulatus"),
        ("Sp. nov. 2", "sp_nov_2"),
        ("  Canis lupus (familiaris) ", "canis_lupus_familiaris"),
        ("Ursus_arctos", "ursus_arctos"),
    ],
)
def test_slug(name, expected):
    assert slug(name) == expected


def test_slugs_refuse_names_that_collide():
    assert slugs(NAMES) == ["anas_platyrhynchos", "catharus_ustulatus", "vulpes_vulpes"]
    with pytest.raises(ValueError) as error:
        slugs(["Canis lupus", "Vulpes vulpes", "canis-lupus"])
    message = str(error.value)
    assert "'Canis lupus'" in message and "'canis-lupus'" in message and "\n" not in message
    with pytest.raises(ValueError, match="no letters or digits"):
        slug("?!")


# --- tables and plots -------------------------------------------------------------------------


def test_per_class_rows_add_up_to_the_totals():
    table = per_class_table(LABELS, PROBS, NAMES)
    assert list(table.class_name) == NAMES
    assert table.images.tolist() == [3, 3, 4]
    assert table.correct.tolist() == [2, 2, 3]
    assert (table.correct + table.incorrect == table.images).all()
    assert table.images.sum() == len(LABELS)
    assert table.correct.sum() / table.images.sum() == pytest.approx(split_metrics(LABELS, PROBS, 1)["accuracy"])
    per_class = split_metrics(LABELS, PROBS, 1, class_names=NAMES)["per_class"]
    assert table.recall.tolist() == [entry["recall"] for entry in per_class.values()]


def test_recall_rows_match_scikit_learn_and_leave_out_absent_classes():
    rows = recall_rows(LABELS, PROBS, NAMES)
    assert rows.class_name.tolist() == NAMES
    assert rows.recall.tolist() == pytest.approx(recall_score(LABELS, PROBS.argmax(1), average=None), abs=1e-6)
    partial = recall_rows(LABELS[LABELS < 2], PROBS[LABELS < 2], NAMES)
    assert partial.class_name.tolist() == NAMES[:2]


def test_confusion_rows_name_actual_and_predicted_classes():
    rows = confusion_rows(LABELS, PROBS, NAMES)
    assert len(rows) == 10
    assert rows.iloc[1].tolist() == ["Anas platyrhynchos", "Catharus ustulatus"]


def test_empty_splits_give_header_only_tables():
    labels, probs = np.zeros(0, np.int32), np.zeros((0, 3), np.float32)
    assert per_class_table(labels, probs, NAMES).empty
    assert confusion_rows(labels, probs, NAMES).empty
    assert list(reliability_rows(labels, probs).columns) == ["bin", "confidence", "accuracy", "images"]
    assert list(recall_rows(labels, probs, NAMES).columns) == ["class_name", "recall"]


def test_prediction_rows_by_hand():
    paths = [f"data/raw/test/x/{i}.jpg" for i in range(len(LABELS))]
    rows = prediction_rows(paths, LABELS, PROBS, NAMES, top_k=2)
    assert list(rows.columns) == [
        "path", "true", "predicted", "confidence", "class_1", "probability_1", "class_2", "probability_2",
        "license", "attribution", "url",
    ]
    assert len(rows) == 10 and rows.path.tolist() == paths
    assert rows.iloc[1].tolist() == [
        paths[1], "Anas platyrhynchos", "Catharus ustulatus", 0.5, "Catharus ustulatus", 0.5, "Anas platyrhynchos", 0.4,
        "", "", "",
    ]
    # a tie (0.3, 0.3 behind 0.4) ranks the lower class id first, as argmax does
    assert rows.iloc[6][["class_1", "class_2", "probability_2"]].tolist() == ["Vulpes vulpes", "Anas platyrhynchos", 0.3]
    assert (rows.predicted == rows.class_1).all() and (rows.confidence == rows.probability_1).all()
    assert (rows.probability_1 >= rows.probability_2).all()
    assert (rows.true == np.asarray(NAMES)[LABELS]).all()
    assert (rows.true != rows.predicted).sum() == 3
    assert list(prediction_rows(paths, LABELS, PROBS, NAMES, top_k=3).columns)[-5:-3] == ["class_3", "probability_3"]


def test_prediction_rows_refuse_bad_inputs_and_empty_splits_give_a_header():
    with pytest.raises(ValueError, match="paths"):
        prediction_rows(["a.jpg"], LABELS, PROBS, NAMES, 2)
    with pytest.raises(ValueError, match="top_k"):
        prediction_rows(["a.jpg"] * 10, LABELS, PROBS, NAMES, 4)
    empty = prediction_rows([], np.zeros(0, np.int32), np.zeros((0, 3)), NAMES, 2)
    assert empty.empty and list(empty.columns) == prediction_columns(2)
