"""The drift report's maths against values worked out by hand from the definitions in
docs/privacy.md#drift-reports (10 quantile bins of the reference, right-closed; PSI = sum of
(c - r) * ln(c / r); an empty bin counts as a share of 0.0001)."""

from __future__ import annotations

import pytest

from modelhost.operations import drift
from modelhost.operations.captures import features_of


def test_a_quantile_interpolates_between_the_two_nearest_values() -> None:
    # 1..10: the median sits halfway between 5 and 6
    assert drift.quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5) == pytest.approx(5.5)
    assert drift.quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.1) == pytest.approx(1.9)


def test_the_cut_points_are_the_references_deciles() -> None:
    # position (n - 1) * q = 9 * q: 0.9, 1.8, ... 8.1 past the first value, 1
    assert drift.cut_points(list(range(1, 11))) == pytest.approx(
        [1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.2, 9.1]
    )


def test_a_reference_with_few_values_has_fewer_bins() -> None:
    assert drift.cut_points([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]) == pytest.approx([0, 0.5, 1])
    assert drift.cut_points([3, 3, 3]) == [3]


def test_bins_are_closed_on_the_right_and_open_at_both_ends() -> None:
    cuts = [1.0, 2.0]
    # (-inf, 1], (1, 2], (2, inf)
    assert drift.counts([-100, 1, 1.5, 2, 2.01, 100], cuts) == [2, 2, 2]


def test_the_psi_of_a_hand_worked_pair_of_histograms() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    # = 0.25 * 0.693147 + 0.25 * 0.405465 = 0.274653
    assert drift.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.274653, abs=1e-6)


def test_an_empty_bin_counts_as_a_share_of_one_in_ten_thousand() -> None:
    # (1 - 0.5) ln(2) + (0.0001 - 0.5) ln(0.0001 / 0.5)
    # = 0.346574 + (-0.4999)(-8.517193) = 0.346574 + 4.257745 = 4.604319
    assert drift.psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx(4.604319, abs=1e-6)


def test_the_same_sample_has_no_drift_and_a_shifted_one_has() -> None:
    reference = [float(v) for v in range(1000)]
    same = drift.compare("x", reference, reference)
    assert same.psi == 0
    assert not same.drifted
    assert same.reference_counts == [100] * 10
    # every value moved above the reference's top: all in the last bin, 0.0001 in the others
    moved = drift.compare("x", reference, [v + 1000 for v in reference])
    # 9 * (0.0001 - 0.1) ln(0.0001 / 0.1) + (1 - 0.1) ln(1 / 0.1)
    # = 9 * 0.690085 + 2.072327 = 6.210763 + 2.072327 = 8.283090
    assert moved.psi == pytest.approx(8.283090, abs=1e-5)
    assert moved.drifted
    assert moved.captured_counts == [0] * 9 + [1000]


@pytest.mark.parametrize(
    ("body", "features"),
    [
        ('{"data": {"x": 1, "y": 2.5}}', {"x": 1.0, "y": 2.5}),
        ('{"parameters": [{"x": 1, "y": 2}]}', {"x": 1.0, "y": 2.0}),
        (
            '{"data": {"x": 1, "name": "a", "ok": true, "n": null, "v": [1], "o": {"a": 1}}}',
            {"x": 1.0},
        ),
        ('{"parameters": [1, 2]}', None),
        ('{"parameters": [{"x": 1}, {"y": 2}]}', None),
        ("[1, 2]", None),
        ("not json", None),
    ],
)
def test_features_are_the_named_numbers_of_data_or_of_one_parameters_object(
    body: str, features: dict[str, float] | None
) -> None:
    assert features_of(body) == features
