"""The main process's side of token limits: a counter slot per limited token, loaded from what
the database kept, and the usage that changed written back."""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib

from modelhost.db.repo import Token
from modelhost.gateway.counters import TokenCounters
from modelhost.serving.quotas import TokenQuotas

NOON = float(calendar.timegm((2026, 12, 6, 12, 0, 0)))
DAY = int(NOON // 86400)  # the key of NOON's quota window


def _token(
    token_id: str, *, rate: str | None = None, quota: str | None = None, used: int = 0
) -> Token:
    digest = hashlib.sha256(token_id.encode()).hexdigest()
    created = dt.datetime(2026, 12, 6, tzinfo=dt.timezone.utc)
    return Token(
        token_id,
        "mid",
        f"name-{token_id}",
        digest,
        "mht_abcd",
        "uid",
        created,
        None,
        rate_limit=rate,
        quota=quota,
        quota_window=DAY,
        quota_used=used,
    )


def test_only_tokens_with_a_limit_get_a_slot_and_its_usage_starts_from_the_database() -> None:
    quotas = TokenQuotas(TokenCounters())
    limits = quotas.limits(
        [_token("a", quota="10/day", used=4), _token("b"), _token("c", rate="5/s")]
    )
    assert {limit.name for limit in limits["mid"].values()} == {"name-a", "name-c"}
    assert quotas.usage("a") == (DAY, 4)
    assert quotas.usage("b") is None
    assert quotas.changed() == []  # nothing new since it was loaded


def test_usage_counted_since_is_written_once_and_a_token_that_lost_its_limits_frees_its_slot() -> (
    None
):
    counters = TokenCounters()
    quotas = TokenQuotas(counters)
    [limit] = quotas.limits([_token("a", quota="10/day", used=4)])["mid"].values()
    assert counters.take(limit, NOON) is None
    assert quotas.changed() == [("a", DAY, 5)]
    assert quotas.changed() == []
    assert counters.take(limit, NOON) is None
    assert quotas.limits([_token("a")]) == {}  # its limits removed: the slot goes
    assert quotas.usage("a") is None
    assert quotas.changed() == [("a", DAY, 6)]  # what it used until then is still written


def test_rows_that_could_not_be_written_are_written_with_the_next_ones() -> None:
    counters = TokenCounters()
    quotas = TokenQuotas(counters)
    [limit] = quotas.limits([_token("a", quota="10/day")])["mid"].values()
    assert counters.take(limit, NOON) is None
    rows = quotas.changed()
    quotas.unsaved(rows)
    assert quotas.changed() == rows
