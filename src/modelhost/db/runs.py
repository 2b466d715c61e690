"""Queries for runs and schedules. Runs move ``queued → running → succeeded|failed|cancelled``
(or are recorded ``skipped``) only through the conditional updates below, so two ticks, or a
tick and a cancel, can never both move the same run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from modelhost.db import tables as t
from modelhost.db.base import Store, _row, new_id, utcnow

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled", "skipped", "denied")


@dataclass(frozen=True)
class Run:
    id: str
    owner_id: str
    model_id: str | None
    schedule_id: str | None
    file: str | None
    function: str | None
    command: str  # JSON list of arguments
    bundle_sha256: str
    timeout_seconds: float
    description: str
    status: str
    message: str
    exit_code: int | None
    pid: int | None
    cancel_requested: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    published_version_id: str | None
    published_version: int | None
    environment: str | None = None  # as asked for; None: the project decides


@dataclass(frozen=True)
class Schedule:
    id: str
    owner_id: str
    model_id: str | None
    file: str | None
    function: str | None
    command: str  # JSON list of arguments
    bundle_sha256: str
    cron: str | None
    interval_seconds: int | None
    timezone: str
    timeout_seconds: float
    description: str
    paused: bool
    next_run_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    environment: str | None = None


class RunsRepo(Store):
    # ------------------------------------------------------------------ runs

    def create_run(self, **values: Any) -> Run:
        row: dict[str, Any] = {
            "id": new_id(),
            "schedule_id": None,
            "description": "",
            "status": "queued",
            "message": "",
            "exit_code": None,
            "pid": None,
            "cancel_requested": False,
            "created_at": utcnow(),
            "started_at": None,
            "finished_at": None,
            "published_version_id": None,
            "published_version": None,
            "environment": None,
            **values,
        }
        with self._begin() as conn:
            conn.execute(insert(t.runs).values(**row))
        return Run(**row)

    def get_run(self, run_id: str) -> Run | None:
        with self._connect() as conn:
            row = conn.execute(select(t.runs).where(t.runs.c.id == run_id)).first()
        return _row(Run, row) if row else None

    def list_runs(
        self,
        *,
        model_id: str | None = None,
        schedule_id: str | None = None,
        statuses: tuple[str, ...] = (),
        limit: int = 1000,
    ) -> list[Run]:
        """Newest first."""
        query = select(t.runs).order_by(t.runs.c.created_at.desc(), t.runs.c.id).limit(limit)
        if model_id is not None:
            query = query.where(t.runs.c.model_id == model_id)
        if schedule_id is not None:
            query = query.where(t.runs.c.schedule_id == schedule_id)
        if statuses:
            query = query.where(t.runs.c.status.in_(statuses))
        with self._connect() as conn:
            return [_row(Run, r) for r in conn.execute(query)]

    def _move(self, run_id: str, from_statuses: tuple[str, ...], **values: Any) -> bool:
        query = (
            update(t.runs)
            .where(t.runs.c.id == run_id, t.runs.c.status.in_(from_statuses))
            .values(**values)
        )
        with self._begin() as conn:
            return conn.execute(query).rowcount == 1

    def start_run(self, run_id: str) -> bool:
        """Claim a queued run for this server; False when it was cancelled or taken."""
        return self._move(run_id, ("queued",), status="running", started_at=utcnow())

    def set_run_pid(self, run_id: str, pid: int) -> None:
        with self._begin() as conn:
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(pid=pid))

    def finish_run(
        self, run_id: str, status: str, message: str, exit_code: int | None = None
    ) -> bool:
        """Record a run's outcome once; False when it already had one."""
        return self._move(
            run_id,
            ACTIVE,
            status=status,
            message=message,
            exit_code=exit_code,
            finished_at=utcnow(),
        )

    def cancel_queued(self, run_id: str, message: str) -> bool:
        return self._move(
            run_id, ("queued",), status="cancelled", message=message, finished_at=utcnow()
        )

    def request_cancel(self, run_id: str) -> bool:
        return self._move(run_id, ("running",), cancel_requested=True)

    def record_publish(self, run_id: str, version_id: str, number: int) -> bool:
        """Note the version a run published; False when the run has already published one,
        or has an outcome already (another server, leading now, found it interrupted)."""
        query = (
            update(t.runs)
            .where(
                t.runs.c.id == run_id,
                t.runs.c.published_version_id.is_(None),
                t.runs.c.status == "running",
            )
            .values(published_version_id=version_id, published_version=number)
        )
        with self._begin() as conn:
            return conn.execute(query).rowcount == 1

    def interrupt_runs(self, message: str) -> list[Run]:
        """Fail every run still marked running (after a server stop); returns them."""
        interrupted = self.list_runs(statuses=("running",))
        return [r for r in interrupted if self.finish_run(r.id, "failed", message)]

    # ------------------------------------------------------------------ schedules

    def create_schedule(self, **values: Any) -> Schedule:
        now = utcnow()
        row: dict[str, Any] = {
            "id": new_id(),
            "description": "",
            "paused": False,
            "created_at": now,
            "updated_at": now,
            **values,
        }
        with self._begin() as conn:
            conn.execute(insert(t.schedules).values(**row))
        return Schedule(**row)

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        with self._connect() as conn:
            query = select(t.schedules).where(t.schedules.c.id == schedule_id)
            row = conn.execute(query).first()
        return _row(Schedule, row) if row else None

    def list_schedules(self) -> list[Schedule]:
        query = select(t.schedules).order_by(t.schedules.c.created_at, t.schedules.c.id)
        with self._connect() as conn:
            return [_row(Schedule, r) for r in conn.execute(query)]

    def update_schedule(self, schedule_id: str, **values: Any) -> Schedule:
        with self._begin() as conn:
            conn.execute(
                update(t.schedules)
                .where(t.schedules.c.id == schedule_id)
                .values(**values, updated_at=utcnow())
            )
        found = self.get_schedule(schedule_id)
        assert found is not None
        return found

    def delete_schedule(self, schedule_id: str) -> bool:
        with self._begin() as conn:
            query = delete(t.schedules).where(t.schedules.c.id == schedule_id)
            return conn.execute(query).rowcount == 1

    def due_schedules(self, now: dt.datetime) -> list[Schedule]:
        query = (
            select(t.schedules)
            .where(t.schedules.c.paused.is_(False), t.schedules.c.next_run_at <= now)
            .order_by(t.schedules.c.next_run_at, t.schedules.c.id)
        )
        with self._connect() as conn:
            return [_row(Schedule, r) for r in conn.execute(query)]

    def advance_schedule(
        self, schedule_id: str, expected: dt.datetime, next_run_at: dt.datetime
    ) -> bool:
        """Move a schedule's next run on, only if no one else did since it was read."""
        query = (
            update(t.schedules)
            .where(t.schedules.c.id == schedule_id, t.schedules.c.next_run_at == expected)
            .values(next_run_at=next_run_at)
        )
        with self._begin() as conn:
            return conn.execute(query).rowcount == 1

    def bundle_needed_by_jobs(self, sha256: str) -> bool:
        """A schedule, or a run that has not started, still needs this bundle."""
        schedules = select(func.count()).where(t.schedules.c.bundle_sha256 == sha256)
        runs = select(func.count()).where(
            t.runs.c.bundle_sha256 == sha256, t.runs.c.status == "queued"
        )
        with self._connect() as conn:
            return bool(conn.execute(schedules).scalar_one() or conn.execute(runs).scalar_one())
