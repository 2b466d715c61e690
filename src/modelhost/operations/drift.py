"""The maths of a drift report: quantile bins of a reference sample, the share of each sample in
each bin, and the population stability index (PSI) between them. Plain Python, no IO.

Binning: the cut points are the reference's 10%, 20%, … 90% quantiles (linear interpolation
between the two nearest values, as NumPy's default), duplicates removed; bin *i* holds the values
``cut[i-1] < x <= cut[i]``, the first bin everything up to the first cut and the last everything
above the last, so every value of either sample falls in a bin. A feature with one value in the
whole reference has one bin.

PSI = Σ (c - r) · ln(c / r) over the bins, with ``r`` and ``c`` the reference's and the captured
sample's share of values in the bin; an empty bin's share counts as 0.0001 (``EMPTY_SHARE``), so
the logarithm is defined. Read it as the rule of thumb says: below 0.1 no real change, 0.1 to
0.2 a moderate one, above 0.2 (``DRIFT_THRESHOLD``) a shift worth looking at.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

BINS = 10
EMPTY_SHARE = 0.0001
DRIFT_THRESHOLD = 0.2


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of the sorted, non-empty ``ordered``, interpolated linearly."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def cut_points(reference: Sequence[float], bins: int = BINS) -> list[float]:
    """The inner edges of ``bins`` quantile bins of ``reference`` (non-empty), ascending and
    without duplicates."""
    ordered = sorted(reference)
    cuts = [quantile(ordered, i / bins) for i in range(1, bins)]
    return sorted(set(cuts))


def counts(values: Sequence[float], cuts: Sequence[float]) -> list[int]:
    """How many of ``values`` fall in each bin (``len(cuts) + 1`` bins, right-closed)."""
    found = [0] * (len(cuts) + 1)
    for value in values:
        found[bisect.bisect_left(cuts, value)] += 1
    return found


def shares(found: Sequence[int]) -> list[float]:
    total = sum(found)
    return [count / total if total else 0.0 for count in found]


def psi(reference: Sequence[float], captured: Sequence[float]) -> float:
    """The population stability index between two lists of bin shares."""
    total = 0.0
    for expected, actual in zip(reference, captured, strict=True):
        expected = max(expected, EMPTY_SHARE)
        actual = max(actual, EMPTY_SHARE)
        total += (actual - expected) * math.log(actual / expected)
    return total


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison: the cut points, each sample's count per bin, and the PSI."""

    name: str
    cuts: list[float]
    reference_counts: list[int]
    captured_counts: list[int]
    psi: float

    @property
    def drifted(self) -> bool:
        return self.psi > DRIFT_THRESHOLD


def compare(name: str, reference: Sequence[float], captured: Sequence[float]) -> FeatureDrift:
    """Bin both samples by ``reference``'s quantiles and compute the PSI (both non-empty)."""
    cuts = cut_points(reference)
    expected = counts(reference, cuts)
    actual = counts(captured, cuts)
    return FeatureDrift(name, cuts, expected, actual, psi(shares(expected), shares(actual)))
