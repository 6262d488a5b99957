"""Markdown the evaluation report and the model card share: one headline table, so they never disagree."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .evaluation import wilson_interval
from ..layout import SPLITS

HEADLINE_METRICS = ("balanced_accuracy", "macro_f1", "top_k_accuracy", "log_loss", "ece")


def number_cell(value: object) -> str:
    """A metric as a Markdown table cell: three decimals, '-' when missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def in_split_order(names: Iterable[str]) -> list[str]:
    """train, val, test first (layout.SPLITS), then any others by name."""
    names = list(names)
    return [s for s in SPLITS if s in names] + sorted(s for s in names if s not in SPLITS)


def accuracy_interval(split_metrics: Mapping) -> tuple[float, float] | None:
    """The Wilson interval of a split's accuracy: ``accuracy_ci_low/high`` when the metrics have them
    (computed from exact counts), else from ``images`` and ``accuracy`` (rounded counts)."""
    low, high = split_metrics.get("accuracy_ci_low"), split_metrics.get("accuracy_ci_high")
    if low is not None and high is not None:
        return float(low), float(high)
    n, accuracy = split_metrics.get("images"), split_metrics.get("accuracy")
    if not n or accuracy is None:
        return None
    return wilson_interval(round(accuracy * n), int(n))


def headline_table(metrics: Mapping[str, Mapping]) -> list[str]:
    """One row per split (``metrics/evaluate.json``'s entries): accuracy with its 95% interval, then
    HEADLINE_METRICS; top-k is headed with its k where the splits share one."""
    ks = sorted({m["top_k"] for m in metrics.values() if "top_k" in m})
    top = f"top-{ks[0]}" if len(ks) == 1 else "top-k"
    lines = [
        f"| split | images | accuracy (95% interval) | balanced accuracy | macro F1 | {top} accuracy | log loss | ECE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in in_split_order(metrics):
        m = metrics[name]
        accuracy, interval = number_cell(m.get("accuracy")), accuracy_interval(m)
        if interval is not None and m.get("accuracy") is not None:
            accuracy += f" ({interval[0]:.3f}-{interval[1]:.3f})"
        cells = [name, str(m.get("images", "")), accuracy, *[number_cell(m.get(key)) for key in HEADLINE_METRICS]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
