"""Rates and quotas of access tokens (``tokens create --rate 50/s --quota 100000/day``): what
they may be, and the UTC windows quotas count in. Pure: no IO, no clock of its own.

A **rate** ``N/s``, ``N/min`` or ``N/h`` is a token bucket: it refills at N per unit (spread
evenly, so 600/min is 10 a second) and holds at most the rate per second, never less than one
call. 50/s lets 50 calls through at once, then one every 20 ms; 120/min lets 2 at once, then one
every half second; 10/h one call, then one every 6 minutes.

A **quota** ``N/day`` or ``N/month`` counts calls in a window of the UTC calendar: a day from
00:00 UTC, a month from 00:00 UTC on its first day. Calls past N in a window are refused until
the next one begins.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

from modelhost import errors

#: seconds in each rate unit
RATE_UNITS = {"s": 1, "min": 60, "h": 3600}
QUOTA_UNITS = ("day", "month")
#: the largest count a rate or quota may have
MAX_COUNT = 10**12
#: what clears a limit (``tokens update --rate none``)
NONE = "none"
_SHAPE = re.compile(r"^\s*(-?[0-9]+)\s*/\s*([A-Za-z]+)\s*$")
_DAY = 86400
#: window keys of months start here, so that they never equal a day's (days since 1970)
_MONTHS = 1_000_000


@dataclass(frozen=True)
class Rate:
    count: int
    unit: str

    def __str__(self) -> str:
        return f"{self.count}/{self.unit}"

    @property
    def per_second(self) -> float:
        return self.count / RATE_UNITS[self.unit]

    @property
    def burst(self) -> float:
        """How many calls the bucket holds: the rate per second, at least one."""
        return max(1.0, self.per_second)


@dataclass(frozen=True)
class Quota:
    count: int
    unit: str

    def __str__(self) -> str:
        return f"{self.count}/{self.unit}"


def _split(text: str, what: str, example: str, units: str) -> tuple[int, str]:
    match = _SHAPE.match(text)
    if match is None:
        raise errors.InvalidLimit(
            f"'{text}' is not a {what}: write a number of calls per unit, such as {example} "
            f"(units: {units})."
        )
    count, unit = int(match.group(1)), match.group(2).lower()
    if count < 1:
        raise errors.InvalidLimit(
            f"'{text}' is not a {what}: the number of calls must be 1 or more, such as "
            f"{example}; give '{NONE}' for no limit."
        )
    if count > MAX_COUNT:
        raise errors.InvalidLimit(
            f"'{text}' is over the largest {what} ({MAX_COUNT} per unit); give '{NONE}' for "
            "no limit."
        )
    return count, unit


def parse_rate(text: str) -> Rate:
    """``N/s``, ``N/min`` or ``N/h``; :class:`~modelhost.errors.InvalidLimit` otherwise."""
    count, unit = _split(text, "rate", "50/s", "s, min, h")
    if unit not in RATE_UNITS:
        hint = " (a quota counts per day or month: use --quota)" if unit in QUOTA_UNITS else ""
        raise errors.InvalidLimit(
            f"'{text}' is not a rate: '{unit}' is not a unit of one; use s, min or h, such as "
            f"50/s or 600/min{hint}."
        )
    return Rate(count, unit)


def parse_quota(text: str) -> Quota:
    """``N/day`` or ``N/month`` (UTC); :class:`~modelhost.errors.InvalidLimit` otherwise."""
    count, unit = _split(text, "quota", "100000/day", "day, month")
    if unit not in QUOTA_UNITS:
        hint = " (a rate counts per s, min or h: use --rate)" if unit in RATE_UNITS else ""
        raise errors.InvalidLimit(
            f"'{text}' is not a quota: '{unit}' is not a unit of one; use day or month (UTC), "
            f"such as 100000/day or 1000000/month{hint}."
        )
    return Quota(count, unit)


def _cleared(text: str | None) -> bool:
    return text is None or text.strip().lower() in ("", NONE)


def rate_or_none(text: str | None) -> Rate | None:
    """:func:`parse_rate`, or None for no text or ``none`` (no rate limit)."""
    return None if _cleared(text) else parse_rate(text)  # type: ignore[arg-type]


def quota_or_none(text: str | None) -> Quota | None:
    """:func:`parse_quota`, or None for no text or ``none`` (no quota)."""
    return None if _cleared(text) else parse_quota(text)  # type: ignore[arg-type]


def window(unit: str, now: float) -> tuple[int, float]:
    """The window ``now`` (seconds since 1970, UTC) is in, for a quota per ``unit``: its key
    (equal for every moment of the same window) and when the next one starts."""
    if unit == "day":
        day = int(now // _DAY)
        return day, float((day + 1) * _DAY)
    moment = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    key = _MONTHS + moment.year * 12 + moment.month - 1
    return key, float(calendar.timegm((year, month, 1, 0, 0, 0)))


class Windows:
    """:func:`window` with the current month remembered: a call needs no calendar arithmetic
    until the month ends."""

    def __init__(self) -> None:
        self._month = (0, 0.0, 0.0)  # key, start, end

    def __call__(self, unit: str, now: float) -> tuple[int, float]:
        if unit == "day":
            day = int(now // _DAY)
            return day, float((day + 1) * _DAY)
        key, start, end = self._month
        if not start <= now < end:
            key, end = window(unit, now)
            moment = dt.datetime.fromtimestamp(now, dt.timezone.utc)
            start = float(calendar.timegm((moment.year, moment.month, 1, 0, 0, 0)))
            self._month = (key, start, end)
        return key, end
