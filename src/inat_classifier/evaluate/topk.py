"""The top-k columns of a prediction table: ``class_1, probability_1, ..., class_k, probability_k``.

One schema for ``metrics/predictions_<split>.csv`` (evaluate) and ``inat-classifier predict``, so a
script reading one reads the other. Ties rank the lower class id first, as ``argmax`` does.
"""

from __future__ import annotations

import numpy as np

DIGITS = 6  # probabilities are rounded to this many decimals in every table


def top_k_columns(top_k: int) -> list[str]:
    """``class_1, probability_1, ..., class_k, probability_k``."""
    return [name for rank in range(1, top_k + 1) for name in (f"class_{rank}", f"probability_{rank}")]


def rank_classes(probs: np.ndarray, names: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The k most probable classes of each row of ``probs`` (N x classes) and their probabilities,
    most probable first, keyed by :func:`top_k_columns`; ``names`` is the class names as an array."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(probs, order, axis=1).round(DIGITS)
    columns: dict[str, np.ndarray] = {}
    for rank in range(k):
        columns[f"class_{rank + 1}"] = names[order[:, rank]]
        columns[f"probability_{rank + 1}"] = top[:, rank]
    return columns
