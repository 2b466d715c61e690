"""Schedule arithmetic: cron in a time zone (with daylight saving changes), intervals, and the
checks on what users type."""

from __future__ import annotations

import datetime as dt

import pytest

from modelhost import errors
from modelhost.jobs.timing import Timing, make_timing, next_run, parse_every

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def nightly_in_berlin() -> Timing:
    return make_timing(
        cron="0 2 * * *", every=None, timezone="Europe/Berlin", min_interval_seconds=60
    )


def test_a_cron_expression_is_read_in_its_time_zone() -> None:
    # 02:00 in Berlin is 01:00 UTC in winter (CET, +01:00).
    assert next_run(nightly_in_berlin(), at("2026-12-02T12:00")) == at("2026-12-03T01:00")
    # ...and 00:00 UTC in summer (CEST, +02:00).
    assert next_run(nightly_in_berlin(), at("2026-07-01T12:00")) == at("2026-07-02T00:00")


def test_the_next_run_is_strictly_after_the_time_given() -> None:
    assert next_run(nightly_in_berlin(), at("2026-12-03T01:00")) == at("2026-12-04T01:00")


def test_a_nightly_run_at_a_time_skipped_by_spring_forward_runs_once_an_hour_later() -> None:
    # 2026-03-29: Berlin's clocks jump from 02:00 to 03:00, so 02:00 does not exist that night.
    timing = nightly_in_berlin()
    first = next_run(timing, at("2026-03-28T12:00"))
    assert first == at("2026-03-29T01:00")  # 03:00 CEST, one gap-length later
    assert next_run(timing, first) == at("2026-03-30T00:00")  # 02:00 CEST the next night


def test_a_run_skipped_by_spring_forward_still_fires_when_asked_just_after_the_jump() -> None:
    # Found by tests/properties: on 2026-03-29 Berlin jumps from 02:00 to 03:00 (01:00 UTC);
    # 02:30 fires at 03:30 CEST, also when the scheduler looks at 03:00 or 03:10.
    nightly = Timing("30 2 * * *", None, "Europe/Berlin")
    for asked in (dt.datetime(2026, 3, 29, 1, 0), dt.datetime(2026, 3, 29, 1, 10)):
        fired = next_run(nightly, asked.replace(tzinfo=UTC))
        assert fired == dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_a_nightly_run_at_a_time_repeated_by_fall_back_runs_only_once() -> None:
    # 2026-10-25: Berlin's clocks go back from 03:00 to 02:00, so 02:00 happens twice.
    timing = nightly_in_berlin()
    first = next_run(timing, at("2026-10-24T12:00"))
    assert first == at("2026-10-25T00:00")  # the first 02:00 (CEST)
    assert next_run(timing, first) == at("2026-10-26T01:00")  # not the second 02:00 (CET)


def test_an_every_half_hour_cron_fires_each_wall_clock_time_once_across_fall_back() -> None:
    timing = make_timing(
        cron="*/30 * * * *", every=None, timezone="Europe/Berlin", min_interval_seconds=60
    )
    moments = [at("2026-10-24T23:45")]
    for _ in range(5):
        moments.append(next_run(timing, moments[-1]))
    utc_times = [m.strftime("%H:%M") for m in moments[1:]]
    # 02:00 and 02:30 CEST (00:00, 00:30 UTC), then 03:00 CET (02:00 UTC): the repeated hour
    # 02:00-03:00 CET fires nothing a second time.
    assert utc_times == ["00:00", "00:30", "02:00", "02:30", "03:00"]


def test_an_interval_keeps_its_rhythm_and_skips_over_missed_ticks() -> None:
    timing = make_timing(cron=None, every="2h", timezone=None, min_interval_seconds=60)
    anchor = at("2026-12-02T00:00")
    assert next_run(timing, anchor, anchor=anchor) == at("2026-12-02T02:00")
    # The server was down from 01:00 to 09:30: the next run is 10:00, not 02:00, 04:00, ...
    assert next_run(timing, at("2026-12-02T09:30"), anchor=at("2026-12-02T02:00")) == at(
        "2026-12-02T10:00"
    )
    # Exactly on a tick: the following one.
    assert next_run(timing, at("2026-12-02T10:00"), anchor=anchor) == at("2026-12-02T12:00")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("15m", 900), ("2h", 7200), ("1d", 86400), ("30 minutes", 1800), ("6H", 21600)],
)
def test_intervals_are_read_with_their_unit(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": None, "every": None}, "either a cron expression"),
        ({"cron": "0 2 * * *", "every": "1h"}, "not both"),
        ({"cron": "0 2 * *", "every": None}, "five fields"),
        ({"cron": "0 0 2 * * *", "every": None}, "five fields"),
        ({"cron": "61 * * * *", "every": None}, "is not a cron expression"),
        ({"cron": "0 2 * * *", "every": None, "timezone": "Mars/Base"}, "not a time zone"),
        ({"cron": None, "every": "often"}, "is not an interval"),
        ({"cron": None, "every": "0m"}, "is not an interval"),
        ({"cron": None, "every": "30s"}, "at most every 1m"),
        ({"cron": "0 2 30 2 *", "every": None}, "'0 2 30 2 *' never fires"),
        ({"cron": "0 0 31 4 *", "every": None}, "never fires"),
        ({"cron": None, "every": "99999999d"}, "longer than 3650 days"),
        ({"cron": None, "every": "3651d"}, "longer than 3650 days"),
        ({"cron": None, "every": "9" * 5000 + "s"}, "longer than 3650 days"),
    ],
)
def test_what_users_get_wrong_is_refused_with_the_fix(
    kwargs: dict[str, str | None], message: str
) -> None:
    with pytest.raises(errors.BadRequest) as raised:
        make_timing(timezone=kwargs.pop("timezone", None), min_interval_seconds=60, **kwargs)
    assert message in raised.value.message


def test_timings_describe_themselves() -> None:
    assert nightly_in_berlin().describe() == "cron '0 2 * * *' (Europe/Berlin)"
    every = make_timing(cron=None, every="90m", timezone=None, min_interval_seconds=60)
    assert every.describe() == "every 90m"
