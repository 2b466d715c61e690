"""Call metrics of a model, per version, as the API, CLI and UI show them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from modelhost import errors
from modelhost.db.repo import Model
from modelhost.gateway.metrics import KEPT_MINUTES, Point
from modelhost.operations import Services, iso


def _minute_iso(minute: int) -> str | None:
    return iso(dt.datetime.fromtimestamp(minute * 60, dt.timezone.utc))


def _point_view(point: Point, minutes: int | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "requests": point.requests,
        "errors": point.errors,
        "client_errors": point.client_errors,
        "error_rate": round(point.errors / point.requests, 4) if point.requests else 0.0,
        "p50_ms": point.p50_ms,
        "p99_ms": point.p99_ms,
    }
    if minutes is None:
        return {"minute": _minute_iso(point.minute), **view}
    return {"requests_per_minute": round(point.requests / minutes, 2), **view}


def model_metrics(services: Services, model: Model, minutes: int = KEPT_MINUTES) -> dict[str, Any]:
    """Per version: totals over the last ``minutes`` minutes and one point per minute."""
    if not 1 <= minutes <= KEPT_MINUTES:
        raise errors.BadRequest(
            f"minutes must be between 1 and {KEPT_MINUTES}: the server keeps the last hour."
        )
    metrics = services.metrics
    versions = []
    for series in metrics.series(model.id):
        versions.append(
            {
                "version_number": series.number,
                "version_id": series.version_id,
                "totals": _point_view(metrics.totals(series, minutes), minutes),
                "points": [_point_view(p) for p in metrics.points(series, minutes)],
            }
        )
    return {
        "model": model.name,
        "model_id": model.id,
        "minutes": minutes,
        "until": _minute_iso(metrics.now_minute() + 1),
        "versions": versions,
    }
