"""Rates and quotas of access tokens as users write them, and the UTC windows of quotas
(docs/cli.md, "Rates and quotas")."""

from __future__ import annotations

import calendar

import pytest

from modelhost import errors, token_limits
from modelhost.token_limits import Quota, Rate


def _utc(*fields: int) -> float:
    return float(calendar.timegm((*fields, 0, 0, 0)[:6]))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50/s", Rate(50, "s")), ("600/min", Rate(600, "min")), (" 1000 / h ", Rate(1000, "h"))],
)
def test_a_rate_is_calls_per_second_minute_or_hour(text: str, expected: Rate) -> None:
    assert token_limits.parse_rate(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100000/day", Quota(100000, "day")), ("1000000/month", Quota(1000000, "month"))],
)
def test_a_quota_is_calls_per_day_or_month(text: str, expected: Quota) -> None:
    assert token_limits.parse_quota(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("50/fortnight", "'fortnight' is not a unit of one; use s, min or h"),
        ("0/s", "must be 1 or more"),
        ("-1/s", "must be 1 or more"),
        ("abc", "write a number of calls per unit, such as 50/s"),
        ("100/day", "a quota counts per day or month: use --quota"),
    ],
)
def test_a_bad_rate_says_what_a_rate_looks_like(text: str, fragment: str) -> None:
    with pytest.raises(errors.InvalidLimit, match=fragment):
        token_limits.parse_rate(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("50/fortnight", "'fortnight' is not a unit of one; use day or month"),
        ("0/day", "must be 1 or more"),
        ("-1/day", "must be 1 or more"),
        ("abc", "such as 100000/day"),
        ("50/s", "a rate counts per s, min or h: use --rate"),
    ],
)
def test_a_bad_quota_says_what_a_quota_looks_like(text: str, fragment: str) -> None:
    with pytest.raises(errors.InvalidLimit, match=fragment):
        token_limits.parse_quota(text)


def test_none_or_nothing_means_no_limit() -> None:
    assert token_limits.rate_or_none("none") is None
    assert token_limits.quota_or_none("") is None
    assert token_limits.quota_or_none(None) is None


@pytest.mark.parametrize(
    ("rate", "burst"),
    [("50/s", 50.0), ("120/min", 2.0), ("10/h", 1.0)],  # the examples in docs/cli.md
)
def test_a_rate_lets_through_at_once_its_calls_per_second_and_never_less_than_one(
    rate: str, burst: float
) -> None:
    assert token_limits.parse_rate(rate).burst == burst


@pytest.mark.parametrize(
    ("now", "unit", "resets"),
    [
        (_utc(2026, 12, 6, 5, 30), "day", _utc(2026, 12, 7)),
        (_utc(2026, 12, 31, 23, 59), "month", _utc(2027, 1, 1)),
        (_utc(2028, 2, 15), "month", _utc(2028, 3, 1)),
        (_utc(2026, 12, 1), "month", _utc(2027, 1, 1)),
    ],
)
def test_quota_windows_are_utc_days_and_months(now: float, unit: str, resets: float) -> None:
    key, resets_at = token_limits.window(unit, now)
    assert resets_at == resets
    assert token_limits.window(unit, resets_at - 1)[0] == key
    assert token_limits.window(unit, resets_at)[0] != key
    assert token_limits.Windows()(unit, now) == (key, resets_at)


def test_a_month_and_a_day_never_share_a_window_key() -> None:
    days = {token_limits.window("day", _utc(year, 1, 1))[0] for year in range(1970, 2400, 7)}
    months = {token_limits.window("month", _utc(year, 1, 1))[0] for year in range(1970, 2400, 7)}
    assert not days & months
