"""Queries for the per-minute call aggregates (table ``call_minutes``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from sqlalchemy import delete, insert, select, update

from modelhost.db import tables as t
from modelhost.db.base import Store


@dataclass
class CallMinute:
    """One version's calls in one minute; ``buckets``: latency bucket index -> calls."""

    model_id: str
    version_id: str
    version_number: int
    minute: int
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    buckets: dict[int, int] | None = None


def _buckets(text: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in orjson.loads(text).items()}


class CallMinutesRepo(Store):
    def add_call_minutes(self, deltas: Iterable[CallMinute]) -> None:
        """Add calls to the stored minutes (a row is created for a minute not stored yet), in
        one transaction: what another server or an earlier run of this one wrote is kept."""
        c = t.call_minutes.c
        with self._begin() as conn:
            for delta in deltas:
                key = (c.version_id == delta.version_id) & (c.minute == delta.minute)
                query = select(t.call_minutes).where(key)
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update()
                row = conn.execute(query).first()
                buckets = dict(delta.buckets or {})
                if row is None:
                    conn.execute(
                        insert(t.call_minutes).values(
                            version_id=delta.version_id,
                            minute=delta.minute,
                            model_id=delta.model_id,
                            version_number=delta.version_number,
                            requests=delta.requests,
                            errors=delta.errors,
                            client_errors=delta.client_errors,
                            latency_sum_ms=delta.latency_sum_ms,
                            latency_max_ms=delta.latency_max_ms,
                            buckets=orjson.dumps(buckets, option=orjson.OPT_NON_STR_KEYS).decode(),
                        )
                    )
                    continue
                for index, count in _buckets(row.buckets).items():
                    buckets[index] = buckets.get(index, 0) + count
                conn.execute(
                    update(t.call_minutes)
                    .where(key)
                    .values(
                        requests=row.requests + delta.requests,
                        errors=row.errors + delta.errors,
                        client_errors=row.client_errors + delta.client_errors,
                        latency_sum_ms=row.latency_sum_ms + delta.latency_sum_ms,
                        latency_max_ms=max(row.latency_max_ms, delta.latency_max_ms),
                        buckets=orjson.dumps(buckets, option=orjson.OPT_NON_STR_KEYS).decode(),
                    )
                )

    def list_call_minutes(self, model_id: str, since: int) -> list[CallMinute]:
        """A model's stored minutes from ``since`` (minutes since the epoch) on."""
        c = t.call_minutes.c
        query = (
            select(t.call_minutes)
            .where(c.model_id == model_id, c.minute >= since)
            .order_by(c.version_number, c.minute)
        )
        with self._connect() as conn:
            return [
                CallMinute(
                    model_id=row.model_id,
                    version_id=row.version_id,
                    version_number=row.version_number,
                    minute=row.minute,
                    requests=row.requests,
                    errors=row.errors,
                    client_errors=row.client_errors,
                    latency_sum_ms=row.latency_sum_ms,
                    latency_max_ms=row.latency_max_ms,
                    buckets=_buckets(row.buckets),
                )
                for row in conn.execute(query)
            ]

    def prune_call_minutes(self, before: int) -> int:
        """Delete the minutes before ``before``; returns how many rows went."""
        with self._begin() as conn:
            found = conn.execute(delete(t.call_minutes).where(t.call_minutes.c.minute < before))
            return int(found.rowcount or 0)
