"""Queries for asynchronous predictions (table ``async_predictions``) and model webhooks."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update

from modelhost.db import tables as t
from modelhost.db.base import Store, _row, utcnow

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"


@dataclass
class AsyncPrediction:
    id: str
    model_id: str
    route: str
    body: str
    status: str
    token_sha256: str | None
    user_id: str | None
    request_id: str
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    outcome: str | None = None
    error: str | None = None
    http_status: int | None = None


@dataclass
class Webhook:
    model_id: str
    url: str
    secret: str  # encrypted
    updated_at: dt.datetime


class PredictionsRepo(Store):
    def add_prediction(
        self,
        *,
        model_id: str,
        route: str,
        body: str,
        request_id: str,
        token_sha256: str | None,
        user_id: str | None,
    ) -> AsyncPrediction:
        """Store a queued prediction; committed when this returns."""
        prediction = AsyncPrediction(
            id=secrets.token_hex(16),  # 128 random bits: the id is not guessable
            model_id=model_id,
            route=route,
            body=body,
            status=QUEUED,
            token_sha256=token_sha256,
            user_id=user_id,
            request_id=request_id,
            created_at=utcnow(),
        )
        with self._begin() as conn:
            conn.execute(insert(t.async_predictions).values(**prediction.__dict__))
        return prediction

    def get_prediction(self, prediction_id: str) -> AsyncPrediction | None:
        query = select(t.async_predictions).where(t.async_predictions.c.id == prediction_id)
        with self._connect() as conn:
            row = conn.execute(query).first()
        return _row(AsyncPrediction, row) if row else None

    def queued_predictions(self, limit: int) -> list[AsyncPrediction]:
        """The oldest queued predictions first."""
        c = t.async_predictions.c
        query = (
            select(t.async_predictions)
            .where(c.status == QUEUED)
            .order_by(c.created_at, c.id)
            .limit(limit)
        )
        with self._connect() as conn:
            return [_row(AsyncPrediction, r) for r in conn.execute(query)]

    def start_prediction(self, prediction_id: str) -> bool:
        """Mark a queued prediction running; False if it was not queued any more (so it is
        never started twice)."""
        c = t.async_predictions.c
        with self._begin() as conn:
            result = conn.execute(
                update(t.async_predictions)
                .where((c.id == prediction_id) & (c.status == QUEUED))
                .values(status=RUNNING, started_at=utcnow())
            )
        return bool(result.rowcount)

    def requeue_prediction(self, prediction_id: str) -> None:
        """A running prediction whose call never started goes back to the queue."""
        c = t.async_predictions.c
        with self._begin() as conn:
            conn.execute(
                update(t.async_predictions)
                .where((c.id == prediction_id) & (c.status == RUNNING))
                .values(status=QUEUED, started_at=None)
            )

    def finish_prediction(
        self,
        prediction_id: str,
        *,
        status: str,
        http_status: int,
        outcome: str | None = None,
        error: str | None = None,
    ) -> None:
        c = t.async_predictions.c
        with self._begin() as conn:
            conn.execute(
                update(t.async_predictions)
                .where(c.id == prediction_id)
                .values(
                    status=status,
                    http_status=http_status,
                    outcome=outcome,
                    error=error,
                    finished_at=utcnow(),
                )
            )

    def fail_running_predictions(self, error: str) -> list[str]:
        """Mark every running prediction failed (at start-up: the server that ran them died or
        stopped, and a prediction is never run twice); their ids."""
        c = t.async_predictions.c
        with self._begin() as conn:
            ids = [r.id for r in conn.execute(select(c.id).where(c.status == RUNNING))]
            if ids:
                conn.execute(
                    update(t.async_predictions)
                    .where(c.id.in_(ids) & (c.status == RUNNING))
                    .values(status=FAILED, http_status=500, error=error, finished_at=utcnow())
                )
        return ids

    def delete_predictions_before(self, cutoff: dt.datetime) -> int:
        """Delete predictions that ended before ``cutoff``; how many."""
        c = t.async_predictions.c
        with self._begin() as conn:
            result = conn.execute(
                delete(t.async_predictions).where(
                    c.finished_at.is_not(None) & (c.finished_at < cutoff)
                )
            )
        return int(result.rowcount or 0)

    def queue_depths(self) -> list[tuple[str, str, int, dt.datetime]]:
        """(model id, status, count, oldest created_at) for queued and running predictions."""
        c = t.async_predictions.c
        query = (
            select(c.model_id, c.status, func.count(), func.min(c.created_at))
            .where(c.status.in_((QUEUED, RUNNING)))
            .group_by(c.model_id, c.status)
        )
        with self._connect() as conn:
            rows = conn.execute(query).all()
        return [
            (r[0], r[1], int(r[2]), r[3] if r[3].tzinfo else r[3].replace(tzinfo=dt.timezone.utc))
            for r in rows
        ]

    # ------------------------------------------------------------------ webhooks

    def get_webhook(self, model_id: str) -> Webhook | None:
        query = select(t.model_webhooks).where(t.model_webhooks.c.model_id == model_id)
        with self._connect() as conn:
            row = conn.execute(query).first()
        return _row(Webhook, row) if row else None

    def set_webhook(self, model_id: str, url: str | None, secret: str | None) -> None:
        """Set a model's webhook (``url`` None: remove it)."""
        c = t.model_webhooks.c
        with self._begin() as conn:
            conn.execute(delete(t.model_webhooks).where(c.model_id == model_id))
            if url is not None and secret is not None:
                conn.execute(
                    insert(t.model_webhooks).values(
                        model_id=model_id, url=url, secret=secret, updated_at=utcnow()
                    )
                )
