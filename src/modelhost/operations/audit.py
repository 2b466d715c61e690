"""The audit log: one append-only event per management action, with who, what, where, outcome.

An action and its event commit in one transaction: if the event cannot be written, the action
fails too. Failed and denied attempts are recorded as well (outside the failed transaction).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from modelhost import errors, events
from modelhost.db.repo import AuditEvent, Model, User
from modelhost.events import Action
from modelhost.operations import Services, iso
from modelhost.permissions import ensure_admin

logger = logging.getLogger(__name__)

EXPORT_FIELDS = (
    "id",
    "time",
    "actor",
    "action",
    "model",
    "version",
    "source_ip",
    "outcome",
    "request_id",
    "detail",
)


@dataclass(frozen=True)
class RequestInfo:
    source_ip: str | None
    request_id: str | None


#: Set per API request by a middleware; read when an event is written.
current_request: ContextVar[RequestInfo] = ContextVar(
    "modelhost_request",
    default=RequestInfo(None, None),  # noqa: B039 - frozen, so never mutated
)


#: version numbers the audit log's column holds (an INTEGER: PostgreSQL's is 32 bits)
_VERSION_COLUMN_LIMIT = 1 << 31


def record(
    services: Services,
    actor: User | None,
    action: Action,
    *,
    model: Model | None = None,
    model_name: str | None = None,
    version: int | None = None,
    outcome: str = "success",
    detail: dict[str, Any] | None = None,
    actor_name: str | None = None,
) -> None:
    info = current_request.get()
    if version is not None and not 0 <= version < _VERSION_COLUMN_LIMIT:
        # A number no version can have (a refused request's): the event keeps it in its detail.
        detail, version = {**(detail or {}), "version": str(version)}, None
    events.write(
        services.repo,
        action,
        actor_id=actor.id if actor else None,
        actor=actor.username if actor else (actor_name or "anonymous")[:64],
        model_id=model.id if model else None,
        model=model.name if model else model_name,
        version=version,
        source_ip=info.source_ip,
        outcome=outcome,
        request_id=info.request_id,
        detail=json.dumps(detail or {}, sort_keys=True),
    )


def outcome_of(error: BaseException) -> str:
    if isinstance(error, errors.ModelhostError) and error.status in (401, 403, 404):
        return "denied"
    return "failed"


@dataclass
class Audit:
    """What an event will say; the action may fill in what it learns (a new version)."""

    model: Model | None
    version: int | None
    detail: dict[str, Any]


@contextmanager
def audited(
    services: Services,
    actor: User,
    action: Action,
    *,
    model: Model | None = None,
    version: int | None = None,
    detail: dict[str, Any] | None = None,
) -> Iterator[Audit]:
    """Run an action and write its event in one transaction; record failures separately.

    After the commit, the reconciler has seen the change (the route table has it when the
    caller gets the answer) and is woken for whatever it starts or stops."""
    audit = Audit(model, version, dict(detail or {}))
    try:
        with services.repo.transaction():
            yield audit
            record(
                services,
                actor,
                action,
                model=audit.model,
                version=audit.version,
                detail=audit.detail,
            )
        # After the commit: the route table has the change when the caller gets the answer.
        services.sync()
        services.wake()
    except Exception as exc:
        try:
            record(
                services,
                actor,
                action,
                model=audit.model,
                version=audit.version,
                outcome=outcome_of(exc),
                detail={**audit.detail, "error": _message(exc)},
            )
        except Exception:  # the log cannot take it either: the action's own error matters
            logger.exception("could not write the audit event for a failed %s", action.name)
        raise


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, errors.ModelhostError) else type(exc).__name__


def event_view(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": iso(event.time),
        "actor": event.actor,
        "action": event.action,
        "model": event.model,
        "version": event.version,
        "source_ip": event.source_ip,
        "outcome": event.outcome,
        "request_id": event.request_id,
        "detail": json.loads(event.detail or "{}"),
    }


def list_events(
    services: Services,
    *,
    model_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """The events of one model (the caller checked ``view-audit``), or of the server, newest
    first; ``since`` without a time zone is UTC."""
    if since is not None:  # naive times are UTC; others are converted to UTC
        since = (
            since.replace(tzinfo=dt.timezone.utc)
            if since.tzinfo is None
            else since.astimezone(dt.timezone.utc)
        )
    found = services.repo.audit_events(model_id=model_id, actor=actor, action=action, since=since)
    return [event_view(e) for e in found]


def list_server_events(
    services: Services,
    viewer: User,
    *,
    actor: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Every event (admins)."""
    ensure_admin(viewer, "read the server-wide audit log")
    return list_events(services, actor=actor, action=action, since=since)


def to_csv(events: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for event in events:
        writer.writerow({**event, "detail": json.dumps(event["detail"], sort_keys=True)})
    return out.getvalue()
