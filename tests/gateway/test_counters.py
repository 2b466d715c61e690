"""The token counters shared by the server's processes: a rate bucket and a quota per limited
token, with an injected clock (seconds since 1970, UTC)."""

from __future__ import annotations

import calendar
import multiprocessing

from modelhost.gateway.counters import TokenCounters, TokenLimit
from modelhost.token_limits import Quota, Rate

NOON = float(calendar.timegm((2026, 12, 6, 12, 0, 0)))
MIDNIGHT = float(calendar.timegm((2026, 12, 7, 0, 0, 0)))


def _limit(
    counters: TokenCounters, rate: str | None = None, quota: str | None = None
) -> TokenLimit:
    slot = counters.slot(0, 0)
    assert slot is not None
    parsed_rate = None if rate is None else Rate(int(rate.split("/")[0]), rate.split("/")[1])
    parsed_quota = None if quota is None else Quota(int(quota.split("/")[0]), quota.split("/")[1])
    return TokenLimit(slot, "billing", parsed_rate, parsed_quota)


def test_a_rate_lets_its_burst_through_then_refuses_until_a_call_is_refilled() -> None:
    counters = TokenCounters()
    limit = _limit(counters, rate="2/s")
    assert counters.take(limit, NOON) is None
    assert counters.take(limit, NOON) is None
    refused = counters.take(limit, NOON)
    assert refused is not None
    assert refused.limit == "rate"
    assert refused.wait == 0.5  # one call in 1/2 s
    assert refused.retry_after == 1
    assert counters.take(limit, NOON + 0.25) is not None
    assert counters.take(limit, NOON + 0.5) is None
    assert counters.take(limit, NOON + 0.5) is not None


def test_a_rate_per_minute_spreads_its_calls_evenly() -> None:
    counters = TokenCounters()
    limit = _limit(counters, rate="6/min")  # one call, then one every 10 s
    assert counters.take(limit, NOON) is None
    refused = counters.take(limit, NOON + 1)
    assert refused is not None
    assert refused.retry_after == 9
    assert counters.take(limit, NOON + 10) is None


def test_a_quota_refuses_past_its_count_until_the_next_utc_day() -> None:
    counters = TokenCounters()
    limit = _limit(counters, quota="3/day")
    assert [counters.take(limit, NOON + i) for i in range(3)] == [None] * 3
    refused = counters.take(limit, NOON + 3)
    assert refused is not None
    assert refused.limit == "quota"
    assert refused.resets_at == MIDNIGHT
    assert refused.retry_after == MIDNIGHT - (NOON + 3)
    assert counters.take(limit, MIDNIGHT) is None
    assert counters.usage(limit.slot)[1] == 1


def test_a_call_the_rate_refuses_is_not_counted_against_the_quota() -> None:
    counters = TokenCounters()
    limit = _limit(counters, rate="1/h", quota="100/day")
    assert counters.take(limit, NOON) is None
    assert counters.take(limit, NOON + 1) is not None
    assert counters.usage(limit.slot)[1] == 1


def test_a_slot_starts_from_the_usage_the_database_kept() -> None:
    counters = TokenCounters()
    day = int(NOON // 86400)
    slot = counters.slot(day, 3)
    assert slot is not None
    limit = TokenLimit(slot, "billing", None, Quota(3, "day"))
    refused = counters.take(limit, NOON)
    assert refused is not None
    assert refused.limit == "quota"
    stale = counters.slot(day - 1, 3)  # counted yesterday: today starts afresh
    assert stale is not None
    assert counters.take(TokenLimit(stale, "billing", None, Quota(3, "day")), NOON) is None


def test_two_processes_sharing_the_memory_share_the_counts() -> None:
    main = TokenCounters()
    other = TokenCounters(main.fd)  # what a gateway process gets
    limit = _limit(main, quota="2/day")
    assert main.take(limit, NOON) is None
    assert other.take(limit, NOON) is None
    assert other.take(limit, NOON) is not None
    assert main.usage(limit.slot) == other.usage(limit.slot)


def _hammer(fd: int, limit: TokenLimit, attempts: int, admitted: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    counters = TokenCounters(fd)
    admitted.put(sum(counters.take(limit, NOON) is None for _ in range(attempts)))


def test_processes_taking_calls_at_once_never_admit_more_than_the_quota() -> None:
    counters = TokenCounters()
    limit = _limit(counters, quota="3000/day")
    context = multiprocessing.get_context("fork")
    admitted = context.Queue()
    workers = [
        context.Process(target=_hammer, args=(counters.fd, limit, 2000, admitted)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    total = sum(admitted.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(60)
    assert total == 3000
    assert counters.usage(limit.slot)[1] == 3000
