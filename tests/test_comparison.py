"""Paired comparison of two runs: McNemar's exact test, Newcombe's paired interval, verdicts, pairing by photo."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from inat_classifier.compare.comparison import (
    A_BETTER,
    B_BETTER,
    NO_DIFFERENCE,
    DifferentPhotos,
    Pairs,
    compare_split,
    difference_interval,
    mcnemar_p,
    verdict,
)
from inat_classifier.errors import UserError

# Fagerland, Lydersen & Laake (2017), Statistical Analysis of Contingency Tables, ch. 8: complete response
# before (A) and after (B) consolidation therapy (Cavo et al. 2012). 59 both, 16 only A, 6 only B, 80 neither.
CAVO = Pairs(both=59, only_a=16, only_b=6, neither=80)


def test_mcnemar_exact_p_by_hand():
    # 6 of 22 discordant: 2 * sum(C(22, k), k <= 6) / 2**22 = 2 * 110056 / 4194304 (the book's 0.052479)
    assert mcnemar_p(16, 6) == pytest.approx(2 * 110056 / 2**22, rel=1e-12)
    assert mcnemar_p(6, 16) == mcnemar_p(16, 6)
    assert mcnemar_p(0, 9) == pytest.approx(2 / 2**9)  # all 9 discordant photos favour B
    assert mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(0, 0) == 1.0  # no discordant photo: no evidence either way


def test_newcombe_interval_matches_the_book():
    low, high = difference_interval(CAVO)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)  # estimate -0.0621


@pytest.mark.parametrize("counts", list(itertools.product([0, 1, 7], [0, 1, 5], [0, 2, 6], [0, 3])))
def test_interval_contains_the_difference_and_stays_in_range(counts):
    pairs = Pairs(*counts)
    if pairs.n == 0:
        return
    low, high = difference_interval(pairs)
    difference = (pairs.only_b - pairs.only_a) / pairs.n
    assert -1.0 <= low <= difference <= high <= 1.0
    assert high - low > 0  # even with no discordant photo, unlike Wald's zero-width interval


def test_interval_is_symmetric_in_the_runs():
    low, high = difference_interval(Pairs(59, 6, 16, 80))  # A and B swapped
    assert (low, high) == pytest.approx((-difference_interval(CAVO)[1], -difference_interval(CAVO)[0]))


def test_verdicts():
    assert verdict(Pairs(50, 0, 9, 41)) == B_BETTER
    assert verdict(Pairs(50, 9, 0, 41)) == A_BETTER
    assert verdict(Pairs(50, 4, 5, 41)) == NO_DIFFERENCE
    # the verdict is McNemar's (p = 0.052), though this interval just excludes 0
    assert verdict(CAVO) == NO_DIFFERENCE and difference_interval(CAVO)[1] < 0


def test_pairs_from_hits():
    assert Pairs.from_hits([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == Pairs(both=2, only_a=1, only_b=1, neither=1)


def frame(paths, right):
    return pd.DataFrame(
        {"path": paths, "true": ["x"] * len(paths), "predicted": ["x" if hit else "y" for hit in right]}
    )


def test_compare_split_pairs_by_photo_whatever_the_order():
    a = frame(["p1", "p2", "p3", "p4"], [1, 1, 0, 0])
    b = frame(["p4", "p3", "p2", "p1"], [1, 1, 1, 1])  # same photos, another order: B gets p3, p4 right too
    row = compare_split("test", a, b)
    assert (row.images, row.only_a, row.only_b) == (4, 0, 2)
    assert (row.accuracy_a, row.accuracy_b, row.difference) == (0.5, 1.0, 0.5)
    assert row.low <= row.difference <= row.high and row.p_value == 0.5 and row.verdict == NO_DIFFERENCE


def test_compare_split_refuses_different_photos():
    expected = r"^val: the runs scored different photos \(1 only in A, 1 only in B, e\.g\. p2\)"
    with pytest.raises(DifferentPhotos, match=expected):
        compare_split("val", frame(["p1", "p2"], [1, 1]), frame(["p1", "p3"], [1, 1]))
    with pytest.raises(DifferentPhotos, match="1 only in A, 0 only in B"):
        compare_split("val", frame(["p1", "p2"], [1, 1]), frame(["p1"], [1]))


def test_compare_split_refuses_other_true_classes_and_repeated_photos():
    relabelled = frame(["p1", "p2"], [1, 1]).assign(true=["x", "z"])
    with pytest.raises(DifferentPhotos, match="p2 different true classes"):
        compare_split("test", frame(["p1", "p2"], [1, 1]), relabelled)
    with pytest.raises(UserError, match="run B lists the photo p1 twice"):
        compare_split("test", frame(["p1", "p2"], [1, 1]), frame(["p1", "p1"], [1, 1]))
