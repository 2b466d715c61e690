"""When a schedule fires: a cron expression in a time zone, or every N seconds/minutes/hours.

Pure functions of their arguments (no clock), so they are tested with any "now".

Cron expressions are read as wall-clock times in the schedule's time zone. Across a daylight
saving change each wall-clock time fires at most once: a time that does not exist (02:30 on
the night clocks jump from 02:00 to 03:00) fires the same length of time later, at 03:30; a
time that happens twice (when clocks go back) fires only the first time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from modelhost import errors

UTC = dt.timezone.utc
_EVERY = re.compile(r"^\s*(\d+)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: the longest interval a schedule may have (next runs past year 9999 cannot be stored)
MAX_INTERVAL_DAYS = 3650
#: longer than any clock change of a time zone (an hour, half an hour, two hours in wartime)
_LONGEST_JUMP = dt.timedelta(hours=3)


@dataclass(frozen=True)
class Timing:
    """``cron`` (five fields, in ``timezone``) or ``interval_seconds``; exactly one is set."""

    cron: str | None
    interval_seconds: int | None
    timezone: str = "UTC"

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron '{self.cron}' ({self.timezone})"
        return f"every {format_interval(self.interval_seconds or 0)}"


def parse_every(text: str) -> int:
    """``90s``, ``15m``, ``2h``, ``1d`` (or ``15 minutes``) -> seconds."""
    match = _EVERY.match(text.lower())
    if match and len(match.group(1).lstrip("0")) > 12:  # int() refuses over 4300 digits
        _too_long(text)
    if not match or int(match.group(1)) < 1:
        raise errors.BadRequest(
            f"'{text}' is not an interval: give a whole number and a unit, such as 30m, 2h or "
            "1d (s for seconds, m minutes, h hours, d days)."
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)[0]]


def _too_long(text: str) -> NoReturn:
    shown = text if len(text) <= 40 else text[:37] + "..."
    raise errors.BadRequest(
        f"The interval '{shown}' is longer than {MAX_INTERVAL_DAYS} days, the longest a schedule "
        "may have; give a shorter one, or a cron expression."
    )


def _check_fires(cron: str) -> None:
    """BadRequest for a valid expression that never fires, such as 30 February."""
    try:
        croniter(cron, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except CroniterBadDateError:
        raise errors.BadRequest(
            f"'{cron}' never fires: no date matches its day-of-month and month (such as 30 "
            "February). Check those fields."
        ) from None


def format_interval(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise errors.BadRequest(
            f"'{name}' is not a time zone; use an IANA name such as Europe/Berlin, "
            "America/New_York or UTC."
        ) from None


def make_timing(
    *,
    cron: str | None,
    every: str | int | None,
    timezone: str | None,
    min_interval_seconds: int,
) -> Timing:
    """A checked :class:`Timing`; every mistake is a :class:`~modelhost.errors.BadRequest`."""
    if (cron is None) == (every is None):
        raise errors.BadRequest(
            "Say when the schedule runs: either a cron expression (such as '0 2 * * *' for "
            "02:00 every day) or an interval (such as 6h), not both."
        )
    if cron is not None:
        cron = " ".join(cron.split())
        if len(cron.split(" ")) != 5 or not croniter.is_valid(cron):
            raise errors.BadRequest(
                f"'{cron}' is not a cron expression: give five fields, minute hour "
                "day-of-month month day-of-week, such as '0 2 * * *' (02:00 every day)."
            )
        _check_fires(cron)
        return Timing(cron, None, zone(timezone or "UTC").key)
    seconds = every if isinstance(every, int) else parse_every(str(every))
    if seconds > MAX_INTERVAL_DAYS * 86400:
        _too_long(str(every) if not isinstance(every, int) else format_interval(seconds))
    if seconds < min_interval_seconds:
        raise errors.BadRequest(
            f"Schedules run at most every {format_interval(min_interval_seconds)} on this "
            f"server (setting schedule_min_interval_seconds); {format_interval(seconds)} is "
            "too often."
        )
    if timezone is not None:
        zone(timezone)  # checked, though an interval does not depend on it
    return Timing(None, seconds, timezone or "UTC")


def next_run(timing: Timing, after: dt.datetime, anchor: dt.datetime | None = None) -> dt.datetime:
    """The first time strictly after ``after`` (aware) that the schedule fires, in UTC.

    An interval counts from ``anchor`` (its previous due time, or its creation), so a schedule
    keeps its rhythm; ticks that were missed are skipped over, not queued.
    """
    if timing.interval_seconds is not None:
        step = dt.timedelta(seconds=timing.interval_seconds)
        start = anchor or after
        if start > after:
            return start.astimezone(UTC)
        periods = (after - start) // step + 1
        return (start + periods * step).astimezone(UTC)
    assert timing.cron is not None
    tz = zone(timing.timezone)
    # Wall-clock times from a little before ``after``: one that fell into a clock jump just
    # before it (02:30 on the night of 02:00 -> 03:00, asked at 03:10) still fires, later.
    local = (after - _LONGEST_JUMP).astimezone(tz).replace(tzinfo=None)
    candidates = croniter(timing.cron, local)
    while True:
        wall = candidates.get_next(dt.datetime)
        # fold=0: a time that happens twice is its first occurrence; a time that does not
        # exist takes the offset before the jump, so it lands as much later as the gap.
        moment = wall.replace(tzinfo=tz).astimezone(UTC)
        if moment > after:
            return moment
