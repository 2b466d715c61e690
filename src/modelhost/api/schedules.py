"""``/api/v1/schedules``: create or replace (the project as a .tar.gz body), list, show,
pause, resume, delete."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from modelhost.api.runs import Command, Environment
from modelhost.httpkit.deps import ServicesDep, UserDep
from modelhost.httpkit.uploads import check_archive_type, received_archive
from modelhost.operations import schedules as ops

router = APIRouter(prefix="/schedules", tags=["schedules"])

Cron = Annotated[str | None, Query(description="Such as '0 2 * * *'")]
Every = Annotated[str | None, Query(description="Such as 30m, 6h or 1d")]
TimeZone = Annotated[str | None, Query(description="IANA time zone; default UTC")]
Target = Annotated[str | None, Query(description="Model to publish to on success")]
File = Annotated[str | None, Query(description="Script to publish, e.g. predict.py")]
Function = Annotated[str | None, Query(description="Function to publish")]
Timeout = Annotated[float | None, Query(description="Time each run may take")]


_CREATE_DESCRIPTION = (
    "The body is the project as a .tar.gz archive (Content-Type: application/gzip), stored "
    "once; each run gets a fresh copy of it. Give 'cron' (five fields, read in 'timezone') or "
    "'every' (such as 30m or 6h)."
)


async def _store(
    request: Request,
    services: ServicesDep,
    user: UserDep,
    params: dict[str, Any],
    replaces: str | None = None,
) -> dict[str, Any]:
    # Checked before the upload is read, so a mistake costs no upload.
    check_archive_type(request)
    if replaces is not None:
        await asyncio.to_thread(ops.check_update, services, user, replaces)
    await asyncio.to_thread(
        ops.check_schedule,
        services,
        user,
        params["command"],
        params["cron"],
        params["every"],
        params["timezone"],
        params["model"],
        params["file"],
        params["function"],
        params["timeout_seconds"],
        params["environment"],
    )
    async with received_archive(request, services) as upload:
        schedule = await asyncio.to_thread(
            functools.partial(
                ops.create_schedule, services, user, archive=upload, replaces=replaces, **params
            )
        )
    return ops.schedule_view(services, schedule)


def schedule_params(
    command: Command,
    cron: Cron = None,
    every: Every = None,
    timezone: TimeZone = None,
    model: Target = None,
    file: File = None,
    function: Function = None,
    timeout_seconds: Timeout = None,
    description: Annotated[str, Query()] = "",
    environment: Environment = None,
) -> dict[str, Any]:
    """The query parameters that create a schedule or replace one, read once for both."""
    return {
        "command": command,
        "cron": cron,
        "every": every,
        "timezone": timezone,
        "model": model,
        "file": file,
        "function": function,
        "timeout_seconds": timeout_seconds,
        "description": description,
        "environment": environment,
    }


ScheduleParams = Annotated[dict[str, Any], Depends(schedule_params)]


@router.post("", status_code=201, summary="Create a schedule", description=_CREATE_DESCRIPTION)
async def create_schedule(
    request: Request, services: ServicesDep, user: UserDep, params: ScheduleParams
) -> dict[str, Any]:
    return await _store(request, services, user, params)


@router.put(
    "/{schedule_id}",
    summary="Replace a schedule's project, command, timing and target",
    description=_CREATE_DESCRIPTION + " The schedule keeps its id, creator, runs and pause.",
)
async def replace_schedule(
    schedule_id: str, request: Request, services: ServicesDep, user: UserDep, params: ScheduleParams
) -> dict[str, Any]:
    return await _store(request, services, user, params, replaces=schedule_id)


@router.get("", summary="List the schedules you may see")
def list_schedules(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"schedules": ops.list_schedules(services, user)}


@router.get("/{schedule_id}", summary="Show a schedule with its last run")
def show_schedule(schedule_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.schedule_view(services, ops.get_schedule(services, user, schedule_id, "view"))


@router.post("/{schedule_id}/pause", summary="Stop firing until resumed")
def pause(schedule_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.schedule_view(services, ops.pause(services, user, schedule_id))


@router.post(
    "/{schedule_id}/take-over",
    summary="Make the schedule act as you (the model's owner, or an admin)",
)
def take_over(schedule_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.schedule_view(services, ops.take_over(services, user, schedule_id))


@router.post("/{schedule_id}/resume", summary="Fire again, from the next due time after now")
def resume(schedule_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.schedule_view(services, ops.resume(services, user, schedule_id))


@router.delete("/{schedule_id}", status_code=204, summary="Delete a schedule (its runs stay)")
def delete(schedule_id: str, services: ServicesDep, user: UserDep) -> None:
    ops.delete(services, user, schedule_id)
