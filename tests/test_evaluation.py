import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

from inat_classifier.evaluation import confusion_rows, per_class_table, split_metrics

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


def test_headline_metrics_match_scikit_learn_and_a_hand_count():
    metrics = split_metrics(LABELS, PROBS, top_k=2)
    predicted = PROBS.argmax(1)
    assert metrics["images"] == 10
    assert metrics["accuracy"] == pytest.approx(0.7) == accuracy_score(LABELS, predicted)
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(LABELS, predicted), abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(f1_score(LABELS, predicted, average="macro"), abs=1e-6)
    assert metrics["loss"] == pytest.approx(log_loss(LABELS, PROBS), abs=1e-6)
    # top-2 by hand: every true class is among the two highest scores except image 4 (true 1, 0.05)
    assert metrics["top_2_accuracy"] == pytest.approx(0.9)


def test_per_class_rows_add_up_to_the_totals():
    table = per_class_table(LABELS, PROBS, NAMES)
    assert list(table.class_name) == NAMES
    assert table.images.tolist() == [3, 3, 4]
    assert table.correct.tolist() == [2, 2, 3]
    assert (table.correct + table.incorrect == table.images).all()
    assert table.images.sum() == len(LABELS)
    assert table.correct.sum() / table.images.sum() == pytest.approx(split_metrics(LABELS, PROBS, 1)["accuracy"])


def test_confusion_rows_name_actual_and_predicted_classes():
    rows = confusion_rows(LABELS, PROBS, NAMES)
    assert len(rows) == 10
    assert rows.iloc[1].tolist() == ["Anas platyrhynchos", "Catharus ustulatus"]
