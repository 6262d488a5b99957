"""Metrics of a trained classifier on one split, checked against scikit-learn in the tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

PER_CLASS_COLUMNS = ["class_id", "class_name", "images", "correct", "incorrect", "precision", "recall", "f1"]


def _round(value: float) -> float:
    return round(float(value), 6)


def split_metrics(labels: np.ndarray, probs: np.ndarray, top_k: int) -> dict:
    """Headline metrics for one split; ``probs`` is N x classes."""
    classes = np.arange(probs.shape[1])
    predicted = probs.argmax(axis=1)
    return {
        "images": int(len(labels)),
        "accuracy": _round(accuracy_score(labels, predicted)),
        "balanced_accuracy": _round(balanced_accuracy_score(labels, predicted)),
        "macro_f1": _round(f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
        "loss": _round(log_loss(labels, probs, labels=classes)),
        f"top_{top_k}_accuracy": _round(top_k_accuracy_score(labels, probs, k=top_k, labels=classes)),
    }


def per_class_table(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """The study's table (images, correctly and incorrectly classified) with precision, recall and F1."""
    if len(labels) == 0:
        return pd.DataFrame(columns=PER_CLASS_COLUMNS)
    classes = np.arange(len(class_names))
    predicted = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    correct = np.array([int(np.sum((labels == c) & (predicted == c))) for c in classes])
    return pd.DataFrame(
        {
            "class_id": classes,
            "class_name": class_names,
            "images": support.astype(int),
            "correct": correct,
            "incorrect": support.astype(int) - correct,
            "precision": np.round(precision, 6),
            "recall": np.round(recall, 6),
            "f1": np.round(f1, 6),
        },
        columns=PER_CLASS_COLUMNS,
    )


def confusion_rows(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per image (actual, predicted) in the shape ``dvc plots``' confusion template reads."""
    names = np.asarray(class_names)
    return pd.DataFrame({"actual": names[labels], "predicted": names[probs.argmax(axis=1)]})
