"""Schedules: a stored project and command that the scheduler runs on a cron expression (in a
time zone) or at a fixed interval, optionally publishing each successful run.

Who may do what follows runs: a schedule that publishes to a model needs the ``schedule``
action on it to change, ``view`` to see; one with no model is its creator's and admins'.
"""

from __future__ import annotations

import json
import shutil
from typing import Any, BinaryIO

from modelhost import errors
from modelhost.db.repo import Model, Schedule, User
from modelhost.events import (
    SCHEDULE,
    SCHEDULE_CREATE,
    SCHEDULE_DELETE,
    SCHEDULE_PAUSE,
    SCHEDULE_RESUME,
    SCHEDULE_TAKE_OVER,
    SCHEDULE_UPDATE,
    Action,
)
from modelhost.jobs.timing import Timing, make_timing, next_run
from modelhost.operations import Services, access_control, iso
from modelhost.operations import runs as run_ops
from modelhost.operations.audit import audited
from modelhost.permissions import ensure_permission, role_of


def timing_of(schedule: Schedule) -> Timing:
    return Timing(schedule.cron, schedule.interval_seconds, schedule.timezone)


def check_schedule(
    services: Services,
    user: User,
    command: list[str],
    cron: str | None,
    every: str | None,
    timezone: str | None,
    model: str | None,
    file: str | None,
    function: str | None,
    timeout_seconds: float | None,
    environment: str | None = None,
) -> tuple[Timing, Model | None, str | None, str | None, float]:
    """Everything about a schedule that can be checked before its project is uploaded."""
    run_ops.validate_command(command)
    run_ops.run_environment(services, environment)
    timing = make_timing(
        cron=cron,
        every=every,
        timezone=timezone,
        min_interval_seconds=services.settings.schedule_min_interval_seconds,
    )
    timeout = run_ops.validate_timeout(services, timeout_seconds)
    target, file, function = run_ops.publish_target(
        services, user, model, file, function, action=SCHEDULE
    )
    return timing, target, file, function, timeout


def create_schedule(
    services: Services,
    user: User,
    *,
    archive: BinaryIO,
    command: list[str],
    cron: str | None = None,
    every: str | None = None,
    timezone: str | None = None,
    model: str | None = None,
    file: str | None = None,
    function: str | None = None,
    timeout_seconds: float | None = None,
    description: str = "",
    replaces: str | None = None,
    environment: str | None = None,
) -> Schedule:
    """Store the project and create the schedule; with ``replaces`` (a schedule id), replace
    that schedule's project, command, timing, target and timeout instead, keeping its id, its
    creator, its runs and whether it is paused."""
    previous = (
        get_schedule(services, user, replaces, "schedule", audit_as=SCHEDULE_UPDATE)
        if replaces
        else None
    )
    timing, target, file, function, timeout = check_schedule(
        services,
        user,
        command,
        cron,
        every,
        timezone,
        model,
        file,
        function,
        timeout_seconds,
        environment,
    )
    environment = run_ops.run_environment(services, environment)
    bundle, tree = run_ops.store_project(services, archive, environment)
    shutil.rmtree(tree, ignore_errors=True)  # each run extracts its own copy of the bundle
    now = services.clock()
    values: dict[str, Any] = {
        "model_id": target.id if target else None,
        "file": file,
        "function": function,
        "command": json.dumps(command),
        "bundle_sha256": bundle.sha256,
        "cron": timing.cron,
        "interval_seconds": timing.interval_seconds,
        "timezone": timing.timezone,
        "timeout_seconds": timeout,
        "description": description,
        "environment": environment,
        "next_run_at": next_run(timing, now, anchor=now),
    }
    detail: dict[str, Any] = {"when": timing.describe()}
    action = SCHEDULE_UPDATE if previous else SCHEDULE_CREATE
    with audited(services, user, action, model=target, detail=detail) as audit:
        if previous is None:
            schedule = services.repo.create_schedule(owner_id=user.id, **values)
        else:
            schedule = services.repo.update_schedule(previous.id, **values)
        audit.detail["schedule_id"] = schedule.id
    if previous is not None and not services.repo.bundle_in_use(previous.bundle_sha256):
        services.store.delete(previous.bundle_sha256)
    services.wake_jobs()
    return schedule


def check_update(services: Services, user: User, schedule_id: str) -> None:
    """May ``user`` replace this schedule? Checked before the new project is uploaded."""
    get_schedule(services, user, schedule_id, "schedule", audit_as=SCHEDULE_UPDATE)


def get_schedule(
    services: Services,
    user: User,
    schedule_id: str,
    action: str,
    *,
    audit_as: Action | None = None,
) -> Schedule:
    schedule = services.repo.get_schedule(schedule_id)
    detail = {"schedule_id": schedule_id}
    if schedule is None or not run_ops.may(
        services,
        user,
        schedule.owner_id,
        schedule.model_id,
        action,
        audit_as=audit_as,
        detail=detail,
    ):
        raise errors.ScheduleNotFound(
            f"There is no schedule '{schedule_id}'. 'modelhost schedules list' shows them."
        )
    return schedule


def list_schedules(services: Services, user: User) -> list[dict[str, Any]]:
    return [
        schedule_view(services, s)
        for s in services.repo.list_schedules()
        if run_ops.may_see(services, user, s.owner_id, s.model_id)
    ]


def _change(services: Services, user: User, schedule_id: str, action: Action) -> Schedule:
    schedule = get_schedule(services, user, schedule_id, "schedule", audit_as=action)
    model = services.repo.find_model(schedule.model_id) if schedule.model_id else None
    detail = {"schedule_id": schedule.id}
    with audited(services, user, action, model=model, detail=detail):
        if action == SCHEDULE_PAUSE:
            changed = services.repo.update_schedule(schedule.id, paused=True)
        elif action == SCHEDULE_RESUME:
            # Ticks that passed while paused are not made up: the next one counts from now.
            now = services.clock()
            changed = services.repo.update_schedule(
                schedule.id,
                paused=False,
                next_run_at=next_run(timing_of(schedule), now, anchor=now),
            )
        else:
            services.repo.delete_schedule(schedule.id)
            changed = schedule
    services.wake_jobs()
    return changed


def pause(services: Services, user: User, schedule_id: str) -> Schedule:
    return _change(services, user, schedule_id, SCHEDULE_PAUSE)


def resume(services: Services, user: User, schedule_id: str) -> Schedule:
    return _change(services, user, schedule_id, SCHEDULE_RESUME)


def take_over(services: Services, user: User, schedule_id: str) -> Schedule:
    """Make a schedule act as ``user`` from its next tick on: the model's owner (action
    ``take-over-schedule``) or an admin; for a schedule with no model, an admin only. It
    stays paused if it was: resume it once it should run as its new creator."""
    action = SCHEDULE_TAKE_OVER
    schedule = get_schedule(services, user, schedule_id, "schedule", audit_as=action)
    model = services.repo.find_model(schedule.model_id) if schedule.model_id else None
    if not user.is_admin:
        if model is None:
            raise errors.Forbidden(
                "Only server admins can take over a schedule that publishes to no model."
            )
        role = role_of(user, model, access_control.roles_on(services, model))
        ensure_permission(user, "take-over-schedule", model, role)
    previous = services.repo.get_user(schedule.owner_id)
    detail = {"schedule_id": schedule.id, "from": previous.username if previous else None}
    with audited(services, user, action, model=model, detail=detail):
        changed = services.repo.update_schedule(schedule.id, owner_id=user.id)
    services.wake_jobs()
    return changed


def delete(services: Services, user: User, schedule_id: str) -> None:
    """Delete a schedule; its runs, and a run of it still going, are kept."""
    schedule = _change(services, user, schedule_id, SCHEDULE_DELETE)
    if not services.repo.bundle_in_use(schedule.bundle_sha256):
        services.store.delete(schedule.bundle_sha256)


def schedule_view(services: Services, schedule: Schedule) -> dict[str, Any]:
    model = services.repo.find_model(schedule.model_id) if schedule.model_id else None
    owner = services.repo.get_user(schedule.owner_id)
    last = services.repo.list_runs(schedule_id=schedule.id, limit=1)
    timing = timing_of(schedule)
    return {
        "id": schedule.id,
        "when": timing.describe(),
        "cron": schedule.cron,
        "interval_seconds": schedule.interval_seconds,
        "timezone": schedule.timezone,
        "command": json.loads(schedule.command),
        "model": model.name if model else None,
        "model_id": schedule.model_id,
        "entry_point": f"{schedule.file}:{schedule.function}" if schedule.file else None,
        "timeout_seconds": schedule.timeout_seconds,
        "environment": schedule.environment or "auto",
        "paused": schedule.paused,
        "next_run_at": None if schedule.paused else iso(schedule.next_run_at),
        "last_run": run_ops.run_view(services, last[0]) if last else None,
        "owner": owner.username if owner else None,
        "description": schedule.description,
        "bundle_sha256": schedule.bundle_sha256,
        "created_at": iso(schedule.created_at),
        "updated_at": iso(schedule.updated_at),
    }
