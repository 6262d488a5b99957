"""Metrics of a trained classifier on one split, checked against scikit-learn in the tests.

Every function takes the same inputs: ``labels`` (N true class ids) and ``probs`` (N x classes
softmax outputs), so the stage computes predictions once and derives every file from them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from ..data.manifest import CREDIT_COLUMNS
from .topk import DIGITS, rank_classes, top_k_columns

PER_CLASS_COLUMNS = ["class_id", "class_name", "images", "correct", "incorrect", "precision", "recall", "f1"]
RELIABILITY_COLUMNS = ["bin", "confidence", "accuracy", "images"]
RECALL_COLUMNS = ["class_name", "recall"]
PREDICTION_COLUMNS = ["path", "true", "predicted", "confidence"]
Z_95 = 1.959963984540054  # two-sided 95% normal quantile
ECE_BINS = 15


def _round(value: float) -> float:
    return round(float(value), 6)


# --- shared helpers ---------------------------------------------------------------------------


def _predictions(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, probs, top-1 predictions), validated once so every metric fails the same clear way."""
    labels = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be N x classes for N = {len(labels)} labels, got shape {probs.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must be class ids 0..{probs.shape[1] - 1}")
    predicted = probs.argmax(axis=1) if len(labels) else np.zeros(0, np.int64)
    return labels, probs, predicted


def _require_images(labels: np.ndarray) -> None:
    if len(labels) == 0:
        raise ValueError("no images")


def _check_names(class_names: Sequence[str], probs: np.ndarray) -> np.ndarray:
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {probs.shape[1]} probability columns")
    return np.asarray(class_names, dtype=object)


def _per_class(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Per-class counts and scores; ``labels=`` keeps classes absent from this split (as zeros)."""
    classes = np.arange(n_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    support = support.astype(int)
    correct = np.diag(_confusion(labels, predicted, n_classes))
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "correct": correct}


def _confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows actual and columns predicted, every class present even when unseen."""
    if len(labels) == 0:
        return np.zeros((n_classes, n_classes), dtype=int)
    return confusion_matrix(labels, predicted, labels=np.arange(n_classes))


def _calibration_bins(
    labels: np.ndarray, probs: np.ndarray, predicted: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(upper edge, mean confidence, accuracy, images) of the non-empty equal-width bins.

    Bins are ``(lo, hi]`` over top-1 confidence, the first one ``[0, hi]`` (scikit-learn's
    ``calibration_curve`` convention). Edges are ``i / bins`` so a confidence of exactly
    ``i / bins`` falls in the bin it closes.
    """
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    edges = np.arange(bins + 1) / bins
    confidence = probs.max(axis=1)
    hit = (predicted == labels).astype(np.float64)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    images = np.bincount(index, minlength=bins)
    filled = images > 0
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins)[filled] / images[filled]
    accuracy = np.bincount(index, weights=hit, minlength=bins)[filled] / images[filled]
    return edges[1:][filled], mean_confidence, accuracy, images[filled]


# --- public API -------------------------------------------------------------------------------


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``correct / n`` (95% by default); (0, 1) when n is 0.

    Wilson rather than the normal approximation: it stays inside [0, 1] and is honest near 0% and
    100% accuracy and for small test sets.
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= correct <= n:
        raise ValueError(f"correct ({correct}) must be between 0 and n ({n})")
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """How far top-1 confidence is from accuracy, averaged over images (0 = calibrated).

    ``sum over bins of |accuracy - mean confidence| * images / N``; bins as in
    :func:`reliability_rows`: equal width, ``(lo, hi]``, the first one including 0.
    """
    labels, probs, predicted = _predictions(labels, probs)
    _require_images(labels)
    _, confidence, accuracy, images = _calibration_bins(labels, probs, predicted, bins)
    return float(np.sum(np.abs(accuracy - confidence) * images) / len(labels))


def reliability_rows(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Reliability-diagram points: per confidence bin (``bin`` = its upper edge), mean confidence,
    accuracy and image count; empty bins are left out (no point to plot)."""
    labels, probs, predicted = _predictions(labels, probs)
    if len(labels) == 0:
        return pd.DataFrame(columns=RELIABILITY_COLUMNS)
    upper, confidence, accuracy, images = _calibration_bins(labels, probs, predicted, bins)
    return pd.DataFrame(
        {
            "bin": np.round(upper, 6),
            "confidence": np.round(confidence, 6),
            "accuracy": np.round(accuracy, 6),
            "images": images.astype(int),
        },
        columns=RELIABILITY_COLUMNS,
    )


def slug(name: str) -> str:
    """A metrics-key-safe form of a class name: ``"Sp. nov. 2"`` -> ``"sp_nov_2"``."""
    result = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not result:
        raise ValueError(f"class name {name!r} has no letters or digits to make a key from")
    return result


def slugs(names: Sequence[str]) -> list[str]:
    """:func:`slug` of each name, refusing two names that would share a key (one would overwrite the other)."""
    seen: dict[str, str] = {}
    result = []
    for name in names:
        key = slug(name)
        if key in seen:
            raise ValueError(f"class names {seen[key]!r} and {name!r} both become the key {key!r}")
        seen[key] = name
        result.append(key)
    return result


def split_metrics(
    labels: np.ndarray, probs: np.ndarray, top_k: int, class_names: Sequence[str] | None = None
) -> dict:
    """Headline metrics for one split; ``probs`` is N x classes.

    ``labels=`` everywhere so a split that lacks a class is scored against all of them. With
    ``class_names``, ``per_class`` holds precision, recall, F1 and support keyed by :func:`slug`.
    """
    labels, probs, predicted = _predictions(labels, probs)
    _require_images(labels)
    keys = slugs(_check_names(class_names, probs)) if class_names is not None else None
    classes = np.arange(probs.shape[1])
    table = _per_class(labels, predicted, len(classes))
    n = len(labels)
    correct = int(np.sum(predicted == labels))
    # with two classes scikit-learn's top-k wants the positive class's score, not N x 2
    scores = probs[:, 1] if probs.shape[1] == 2 else probs
    low, high = wilson_interval(correct, n)
    metrics = {
        "images": n,
        "accuracy": _round(correct / n),
        # mean recall over the classes this split has (scikit-learn's, without its warning)
        "balanced_accuracy": _round(table["recall"][table["support"] > 0].mean()),
        "macro_f1": _round(f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
        # not `loss`: dvclive's `loss` is the training loss, and `dvc metrics diff` would pair them
        "log_loss": _round(log_loss(labels, probs, labels=classes)),
        # one key whatever k is, so `dvc metrics diff` pairs experiments that set evaluate.top_k differently
        "top_k_accuracy": _round(top_k_accuracy_score(labels, scores, k=top_k, labels=classes)),
        "top_k": int(top_k),
        "weighted_f1": _round(f1_score(labels, predicted, labels=classes, average="weighted", zero_division=0)),
        "ece": _round(expected_calibration_error(labels, probs)),
        "accuracy_ci_low": _round(low),
        "accuracy_ci_high": _round(high),
    }
    if keys is not None:
        metrics["per_class"] = {
            key: {
                "precision": _round(table["precision"][c]),
                "recall": _round(table["recall"][c]),
                "f1": _round(table["f1"][c]),
                "support": int(table["support"][c]),
            }
            for c, key in enumerate(keys)
        }
    return metrics


def per_class_table(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """The study's table (images, correctly and incorrectly classified) with precision, recall and F1."""
    labels, probs, predicted = _predictions(labels, probs)
    if len(labels) == 0:
        return pd.DataFrame(columns=PER_CLASS_COLUMNS)
    _check_names(class_names, probs)
    table = _per_class(labels, predicted, len(class_names))
    return pd.DataFrame(
        {
            "class_id": np.arange(len(class_names)),
            "class_name": list(class_names),
            "images": table["support"],
            "correct": table["correct"],
            "incorrect": table["support"] - table["correct"],
            "precision": np.round(table["precision"], 6),
            "recall": np.round(table["recall"], 6),
            "f1": np.round(table["f1"], 6),
        },
        columns=PER_CLASS_COLUMNS,
    )


def recall_rows(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """Per-class recall for a bar plot; classes with no images in the split are left out (recall is
    undefined there, and a 0 bar would read as a failure)."""
    labels, probs, predicted = _predictions(labels, probs)
    if len(labels) == 0:
        return pd.DataFrame(columns=RECALL_COLUMNS)
    names = _check_names(class_names, probs)
    table = _per_class(labels, predicted, len(names))
    present = table["support"] > 0
    return pd.DataFrame(
        {"class_name": names[present], "recall": np.round(table["recall"][present], 6)}, columns=RECALL_COLUMNS
    )


def confusion_rows(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per image (actual, predicted) in the shape ``dvc plots``' confusion template reads."""
    labels, probs, predicted = _predictions(labels, probs)
    names = _check_names(class_names, probs)
    return pd.DataFrame({"actual": names[labels], "predicted": names[predicted]})


def prediction_columns(top_k: int) -> list[str]:
    """``path, true, predicted, confidence, class_1, probability_1, ..., class_k, probability_k,
    license, attribution, url`` (the top-k columns as ``inat-classifier predict`` writes them)."""
    return [*PREDICTION_COLUMNS, *top_k_columns(top_k), *CREDIT_COLUMNS]


def prediction_rows(
    paths: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    top_k: int,
    credits: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per image with its top-k classes and probabilities, so later analysis (error review,
    thresholds, another metric) needs no re-run of the model. Ties rank the lower class id first,
    as ``argmax`` does, so ``predicted`` is always ``class_1``. ``credits`` (``manifest.photo_credits``
    of the paths) travels with each row, since a file naming photos must credit them; empty without."""
    labels, probs, predicted = _predictions(labels, probs)
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths for {len(labels)} labels")
    if credits is not None and len(credits) != len(paths):
        raise ValueError(f"{len(credits)} credits for {len(paths)} paths")
    if not 1 <= top_k <= probs.shape[1]:
        raise ValueError(f"top_k must be between 1 and {probs.shape[1]}, got {top_k}")
    columns = prediction_columns(top_k)
    if len(labels) == 0:
        return pd.DataFrame(columns=columns)
    names = _check_names(class_names, probs)
    data = {
        "path": [str(path) for path in paths],
        "true": names[labels],
        "predicted": names[predicted],
        "confidence": np.round(probs.max(axis=1), DIGITS),
        **rank_classes(probs, names, top_k),
    }
    for column in CREDIT_COLUMNS:
        data[column] = [""] * len(labels) if credits is None else credits[column].astype(str).tolist()
    return pd.DataFrame(data, columns=columns)
