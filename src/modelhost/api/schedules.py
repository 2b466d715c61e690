"""``/api/v1/schedules``: create (the project as a .tar.gz body), list, show, pause, resume,
delete."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from modelhost.api.deps import ServicesDep, UserDep
from modelhost.api.runs import Command
from modelhost.api.uploads import received_archive
from modelhost.operations import schedules as ops

router = APIRouter(prefix="/schedules", tags=["schedules"])


@router.post(
    "",
    status_code=201,
    summary="Create a schedule",
    description=(
        "The body is the project as a .tar.gz archive (Content-Type: application/gzip), "
        "stored once; each run gets a fresh copy of it. Give 'cron' (five fields, read in "
        "'timezone') or 'every' (such as 30m or 6h)."
    ),
)
async def create_schedule(
    request: Request,
    services: ServicesDep,
    user: UserDep,
    command: Command,
    cron: Annotated[str | None, Query(description="Such as '0 2 * * *'")] = None,
    every: Annotated[str | None, Query(description="Such as 30m, 6h or 1d")] = None,
    timezone: Annotated[str | None, Query(description="IANA time zone; default UTC")] = None,
    model: Annotated[str | None, Query(description="Model to publish to on success")] = None,
    file: Annotated[str | None, Query(description="Script to publish, e.g. predict.py")] = None,
    function: Annotated[str | None, Query(description="Function to publish")] = None,
    timeout_seconds: Annotated[float | None, Query(description="Time each run may take")] = None,
    description: Annotated[str, Query()] = "",
) -> dict[str, Any]:
    # Checked before the upload is read, so a mistake costs no upload.
    await asyncio.to_thread(
        ops.check_schedule,
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
    )
    async with received_archive(request, services) as upload:
        schedule = await asyncio.to_thread(
            ops.create_schedule,
            services,
            user,
            archive=upload,
            command=command,
            cron=cron,
            every=every,
            timezone=timezone,
            model=model,
            file=file,
            function=function,
            timeout_seconds=timeout_seconds,
            description=description,
        )
    return ops.schedule_view(services, schedule)


@router.get("", summary="List the schedules you may see")
def list_schedules(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"schedules": ops.list_schedules(services, user)}


@router.get("/{schedule_id}", summary="Show a schedule with its last run")
def show_schedule(schedule_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.schedule_view(services, ops.get_schedule(services, user, schedule_id, "view"))


@router.post("/{schedule_id}/pause", summary="Stop firing until resumed")
def pause(schedule_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.schedule_view(services, ops.pause(services, user, schedule_id))


@router.post("/{schedule_id}/resume", summary="Fire again, from the next due time after now")
def resume(schedule_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.schedule_view(services, ops.resume(services, user, schedule_id))


@router.delete("/{schedule_id}", status_code=204, summary="Delete a schedule (its runs stay)")
def delete(schedule_id: str, services: ServicesDep, user: UserDep) -> None:
    ops.delete(services, user, schedule_id)
