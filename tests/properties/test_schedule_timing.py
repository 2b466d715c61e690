"""Property tests of the schedule maths in jobs/timing.py, against the rules its docstring
states: a cron expression is wall-clock time in the schedule's zone, each wall-clock time
fires at most once across a DST change (a time that does not exist fires as much later as the
gap, a time that happens twice fires the first time), and an interval keeps its rhythm from
its anchor."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from modelhost.jobs.timing import Timing, next_run

UTC = dt.timezone.utc
ZONES = st.sampled_from(
    ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
)
CRONS = st.builds(
    lambda minute, hour, day: f"{minute} {hour} {day} * *",
    st.sampled_from(["0", "30", "*/15", "5,45"]),
    st.sampled_from(["*", "2", "1-3", "*/6"]),
    st.just("*"),  # every day: the next time is within a day, so every minute is checked
)
# Clock changes of the zones above (UTC): most generated moments fall within a day of one.
CHANGES = [
    dt.datetime(2026, 3, 29, 1, tzinfo=UTC),  # Europe/Berlin forward
    dt.datetime(2026, 10, 25, 1, tzinfo=UTC),  # Europe/Berlin back
    dt.datetime(2026, 3, 8, 7, tzinfo=UTC),  # America/New_York forward
    dt.datetime(2026, 11, 1, 6, tzinfo=UTC),  # America/New_York back
    dt.datetime(2026, 4, 4, 15, tzinfo=UTC),  # Australia/Lord_Howe back half an hour
    dt.datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Australia/Lord_Howe forward half an hour
]
MOMENTS = st.one_of(
    st.builds(
        lambda change, offset: change + offset,
        st.sampled_from(CHANGES),
        st.timedeltas(min_value=dt.timedelta(hours=-30), max_value=dt.timedelta(hours=6)),
    ),
    st.datetimes(
        min_value=dt.datetime(2025, 1, 1),
        max_value=dt.datetime(2027, 12, 31),
        timezones=st.just(UTC),
    ),
)


def _fires_at(cron: str, tz: ZoneInfo, moment: dt.datetime) -> bool:
    """Whether the schedule fires at ``moment`` (UTC) by the documented rules."""
    local = moment.astimezone(tz)
    wall = local.replace(tzinfo=None)
    if croniter.match(cron, wall):
        # A wall time that happens twice fires only its first time (fold 0).
        return local.fold == 0
    # A wall time that does not exist (clocks jumped forward over it) fires as much later as
    # the gap: at the moment the offset from before the jump gives it.
    before = (moment - dt.timedelta(hours=3)).astimezone(tz).utcoffset()
    assert before is not None
    skipped = (moment + before).replace(tzinfo=None)
    exists = skipped.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    return exists != skipped and bool(croniter.match(cron, skipped))


@settings(deadline=None, max_examples=150)
@given(CRONS, ZONES, MOMENTS)
def test_a_cron_schedule_fires_next_at_its_first_matching_time_after_now(
    cron: str, zone: str, after: dt.datetime
) -> None:
    tz = ZoneInfo(zone)
    fired = next_run(Timing(cron, None, zone), after)
    assert fired.tzinfo is not None
    assert fired.utcoffset() == dt.timedelta(0)
    assert fired > after
    assert _fires_at(cron, tz, fired), (cron, zone, after, fired)
    # Nothing fired in between: no whole minute strictly between now and then fires.
    minute = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while minute < fired:
        assert not _fires_at(cron, tz, minute), (cron, zone, after, minute, fired)
        minute += dt.timedelta(minutes=1)


@given(
    st.integers(min_value=60, max_value=7 * 86400),
    MOMENTS,
    st.timedeltas(min_value=dt.timedelta(days=-30), max_value=dt.timedelta(days=30)),
)
def test_an_interval_keeps_its_rhythm_from_its_anchor_and_skips_missed_ticks(
    seconds: int, after: dt.datetime, offset: dt.timedelta
) -> None:
    anchor = after + offset
    fired = next_run(Timing(None, seconds, "UTC"), after, anchor)
    step = dt.timedelta(seconds=seconds)
    assert fired > after
    if anchor > after:
        assert fired == anchor  # not due yet: its first time is the anchor itself
    else:
        assert (fired - anchor) % step == dt.timedelta(0)
        assert fired - step <= after  # the next one, not a later one: missed ticks skipped
