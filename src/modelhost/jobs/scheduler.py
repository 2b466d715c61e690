"""Turn due schedules into runs. One call is one tick; ``now`` comes from the caller's clock.

For each schedule whose next run time has come, in one transaction: move its next run time
on (only if no other tick did: a conditional update), then queue a run, or record a
``skipped`` run when the schedule's previous run is still queued or running. The next run time
is the first one after ``now``, so ticks missed while the server was down come out as one
run at start-up, not one per missed tick.
"""

from __future__ import annotations

import datetime as dt
import logging

from modelhost.db.repo import Run, Schedule
from modelhost.db.runs import ACTIVE
from modelhost.events import SCHEDULE_DENIED
from modelhost.jobs.timing import next_run
from modelhost.operations import Services
from modelhost.operations.audit import record
from modelhost.operations.runs import creator_refusal
from modelhost.operations.schedules import timing_of

logger = logging.getLogger(__name__)


def fire_due(services: Services, now: dt.datetime) -> list[Run]:
    """Queue (or skip) one run per due schedule; returns the runs recorded."""
    fired: list[Run] = []
    for schedule in services.repo.due_schedules(now):
        try:
            run = _fire(services, schedule, now)
        except Exception:  # one broken schedule must not stop the others
            logger.exception("could not fire schedule %s", schedule.id)
            continue
        if run is not None:
            fired.append(run)
    return fired


def _fire(services: Services, schedule: Schedule, now: dt.datetime) -> Run | None:
    repo = services.repo
    assert schedule.next_run_at is not None
    following = next_run(timing_of(schedule), now, anchor=schedule.next_run_at)
    refusal = creator_refusal(services, schedule.owner_id, schedule.model_id, "schedule")
    with repo.transaction():
        if not repo.advance_schedule(schedule.id, schedule.next_run_at, following):
            return None  # another tick fired it
        if refusal is not None:
            return _deny(services, schedule, now, refusal)
        active = repo.list_runs(schedule_id=schedule.id, statuses=ACTIVE, limit=1)
        values = {
            "owner_id": schedule.owner_id,
            "model_id": schedule.model_id,
            "schedule_id": schedule.id,
            "file": schedule.file,
            "function": schedule.function,
            "command": schedule.command,
            "bundle_sha256": schedule.bundle_sha256,
            "timeout_seconds": schedule.timeout_seconds,
            "environment": schedule.environment,
            "description": f"Scheduled ({timing_of(schedule).describe()})",
            "created_at": now,
        }
        if active:
            previous = active[0]
            return repo.create_run(
                **values,
                status="skipped",
                message=(
                    f"Skipped: the previous run of this schedule ({previous.id}) was still "
                    f"{previous.status}."
                ),
                finished_at=now,
            )
        return repo.create_run(**values)


def pause_denied(services: Services, schedule: Schedule, refusal: str) -> str:
    """Pause a schedule whose creator may no longer run it, write the audit event and the
    log line, and return the message for its denied run."""
    services.repo.update_schedule(schedule.id, paused=True)
    model = services.repo.find_model(schedule.model_id) if schedule.model_id else None
    record(
        services,
        None,
        SCHEDULE_DENIED,
        model=model,
        outcome="denied",
        detail={"schedule_id": schedule.id, "reason": refusal},
        actor_name="modelhost",
    )
    logger.warning("schedule %s paused: %s", schedule.id, refusal)
    return (
        f"Denied: {refusal}, so the schedule is paused. The model's owner or an admin can "
        f"take it over ('modelhost schedules take-over {schedule.id}') and resume it."
    )


def _deny(services: Services, schedule: Schedule, now: dt.datetime, refusal: str) -> Run:
    """The tick is recorded as ``denied``, the schedule pauses and the audit log says why;
    nothing runs, so none of the model's secrets is decrypted for it."""
    repo = services.repo
    message = pause_denied(services, schedule, refusal)
    return repo.create_run(
        owner_id=schedule.owner_id,
        model_id=schedule.model_id,
        schedule_id=schedule.id,
        file=schedule.file,
        function=schedule.function,
        command=schedule.command,
        bundle_sha256=schedule.bundle_sha256,
        timeout_seconds=schedule.timeout_seconds,
        environment=schedule.environment,
        description=f"Scheduled ({timing_of(schedule).describe()})",
        created_at=now,
        status="denied",
        message=message,
        finished_at=now,
    )
