"""Two runs scored on the same photos: which is more accurate, and is the difference more than chance?

The photos are shared, so the comparison is paired: a photo both runs get right (or both wrong) says
nothing about which run is better; only the discordant photos do. Hence McNemar's exact test and a
paired interval, far tighter than two independent Wilson intervals side by side.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from ..errors import UserError
from ..evaluate.evaluation import Z_95, wilson_interval
from ..layout import SPLITS
from .revisions import Revision

ALPHA = 0.05  # the verdicts' significance level
METRICS_FILE = "metrics/evaluate.json"
PREDICTIONS_FILE = "metrics/predictions_{split}.csv"
NO_DIFFERENCE, A_BETTER, B_BETTER = "no significant difference", "A is better", "B is better"


class DifferentPhotos(UserError):
    """The two runs did not score the same photos with the same true classes: nothing to pair."""


@dataclass(frozen=True)
class Pairs:
    """Photos counted by which of the two runs classified them correctly."""

    both: int
    only_a: int
    only_b: int
    neither: int

    @classmethod
    def from_hits(cls, a: np.ndarray, b: np.ndarray) -> Pairs:
        a, b = np.asarray(a, bool), np.asarray(b, bool)
        return cls(int(np.sum(a & b)), int(np.sum(a & ~b)), int(np.sum(~a & b)), int(np.sum(~a & ~b)))

    @property
    def n(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact McNemar test: two-sided binomial test of ``only_b`` among the discordant photos against 1/2
    (1.0 when no photo is discordant). Exact because the discordant photos are often few."""
    discordant = only_a + only_b
    return 1.0 if discordant == 0 else float(binomtest(only_b, discordant, 0.5).pvalue)


def difference_interval(pairs: Pairs, z: float = Z_95) -> tuple[float, float]:
    """95% interval for accuracy B - A on the same photos: Newcombe's square-and-add (hybrid score)
    interval for paired proportions (Newcombe 1998, Stat Med 17:2635, method 10).

    Each accuracy's Wilson interval, combined with the correlation of the two runs' hits (phi with a
    continuity correction). Unlike the Wald interval it stays inside [-1, 1] and keeps a width when
    few or no photos are discordant.
    """
    n = pairs.n
    if n == 0:
        raise ValueError("no photos")
    right_a, right_b = pairs.both + pairs.only_a, pairs.both + pairs.only_b
    p_a, p_b = right_a / n, right_b / n
    low_a, high_a = wilson_interval(right_a, n, z)
    low_b, high_b = wilson_interval(right_b, n, z)
    margins = right_a * (n - right_a) * right_b * (n - right_b)
    cross = pairs.both * pairs.neither - pairs.only_a * pairs.only_b
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > 0 else cross) / np.sqrt(margins)
    below = np.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2 - 2 * phi * (p_b - low_b) * (high_a - p_a))
    above = np.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2 - 2 * phi * (p_a - low_a) * (high_b - p_b))
    return float(p_b - p_a - below), float(p_b - p_a + above)


def verdict(pairs: Pairs, alpha: float = ALPHA) -> str:
    """McNemar's answer in words: which run is better, if either is at significance level ``alpha``."""
    if mcnemar_p(pairs.only_a, pairs.only_b) >= alpha:
        return NO_DIFFERENCE
    return B_BETTER if pairs.only_b > pairs.only_a else A_BETTER


@dataclass(frozen=True)
class SplitComparison:
    split: str
    images: int
    accuracy_a: float
    accuracy_b: float
    difference: float  # B - A
    low: float
    high: float
    only_a: int  # photos only A classified correctly
    only_b: int
    p_value: float  # exact McNemar
    verdict: str


def compare_split(split: str, a: pd.DataFrame, b: pd.DataFrame) -> SplitComparison:
    """Pair two runs' predictions photo by photo (by ``path``), refusing when the photos differ."""
    for run, frame in (("A", a), ("B", b)):
        if not frame["path"].is_unique:
            twice = frame["path"][frame["path"].duplicated()].iloc[0]
            raise UserError(f"{split}: run {run} lists the photo {twice} twice")
    only_in_a, only_in_b = set(a["path"]) - set(b["path"]), set(b["path"]) - set(a["path"])
    if only_in_a or only_in_b:
        example = sorted(only_in_a or only_in_b)[0]
        raise DifferentPhotos(
            f"{split}: the runs scored different photos ({len(only_in_a)} only in A, {len(only_in_b)} only in B, "
            f"e.g. {example}); compare runs of the same subset"
        )
    b = b.set_index("path").loc[a["path"]].reset_index()
    relabelled = a["true"].to_numpy() != b["true"].to_numpy()
    if relabelled.any():
        raise DifferentPhotos(f"{split}: the runs give {a['path'][relabelled].iloc[0]} different true classes")
    pairs = Pairs.from_hits(a["true"] == a["predicted"], b["true"] == b["predicted"])
    low, high = difference_interval(pairs)
    accuracy_a, accuracy_b = (pairs.both + pairs.only_a) / pairs.n, (pairs.both + pairs.only_b) / pairs.n
    return SplitComparison(
        split, pairs.n, accuracy_a, accuracy_b, accuracy_b - accuracy_a, low, high,
        pairs.only_a, pairs.only_b, mcnemar_p(pairs.only_a, pairs.only_b), verdict(pairs),
    )  # fmt: skip


# --- runs at revisions ------------------------------------------------------------------------


def load_metrics(run: Revision) -> dict:
    """The evaluate stage's metrics of ``run``; refuses a run that has none."""
    text = run.read_text(METRICS_FILE)
    if text is None:
        raise UserError(f"{run.label} has no {METRICS_FILE}: the evaluate stage has not run there")
    return json.loads(text)


def evaluated_splits(metrics: dict) -> list[str]:
    return [split for split in SPLITS if split in metrics]


def load_predictions(run: Revision, split: str) -> pd.DataFrame:
    """Per-image predictions of an evaluated split; refuses a run without them (an older evaluate)."""
    path = PREDICTIONS_FILE.format(split=split)
    text = run.read_text(path)
    frame = None if text is None else pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    if frame is None or frame.empty:
        raise UserError(f"{run.label} has no per-image predictions for {split} ({path}); rerun its evaluate stage")
    missing = [column for column in ("path", "true", "predicted") if column not in frame.columns]
    if missing:
        raise UserError(f"{run.label}: {path} lacks the column(s) {', '.join(missing)}")
    return frame


def compare_runs(a: Revision, b: Revision) -> tuple[list[SplitComparison], list[str]]:
    """Every split both runs evaluated, compared; and a note for each split only one of them evaluated."""
    splits_a, splits_b = evaluated_splits(load_metrics(a)), evaluated_splits(load_metrics(b))
    shared = [split for split in splits_a if split in splits_b]
    if not shared:
        raise UserError(f"{a.label} and {b.label} evaluated no split in common")
    notes = [f"{split}: evaluated only by {'A' if split in splits_a else 'B'}, not compared"
             for split in SPLITS if (split in splits_a) != (split in splits_b)]  # fmt: skip
    return [compare_split(split, load_predictions(a, split), load_predictions(b, split)) for split in shared], notes


def render_text(a: Revision, b: Revision, rows: list[SplitComparison], notes: list[str]) -> str:
    """A short table, one line per split, and what the columns mean."""
    lines = [
        f"A: {a.label}   B: {b.label}",
        f"{'split':<6} {'photos':>6} {'A':>6} {'B':>6}  {'B-A (95% interval)':<24} {'only A':>6} {'only B':>6}"
        f" {'p':>6}  verdict",
    ]
    for row in rows:
        interval = f"{row.difference:+.3f} ({row.low:+.3f}, {row.high:+.3f})"
        lines.append(
            f"{row.split:<6} {row.images:>6} {row.accuracy_a:>6.3f} {row.accuracy_b:>6.3f}  {interval:<24}"
            f" {row.only_a:>6} {row.only_b:>6} {row.p_value:>6.3f}  {row.verdict}"
        )
    lines += notes
    lines.append(
        f"accuracy on the same photos; interval: Newcombe's paired square-and-add; p: exact McNemar on the photos "
        f"only one run got right; verdicts at {ALPHA}"
    )
    return "\n".join(lines) + "\n"


def render_json(a: Revision, b: Revision, rows: list[SplitComparison], notes: list[str]) -> str:
    splits = [vars(row) for row in rows]
    return json.dumps({"a": a.label, "b": b.label, "alpha": ALPHA, "splits": splits, "notes": notes}, indent=2) + "\n"
