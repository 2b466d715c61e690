"""``/api/v1/runs``: start a run (the project as a .tar.gz body), list, show, logs, cancel."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from modelhost.httpkit.deps import ServicesDep, UserDep
from modelhost.httpkit.uploads import check_archive_type, received_archive
from modelhost.operations import runs as ops

#: What a run runs in; as for a publish, left out: the project decides.
Environment = Annotated[
    str | None,
    Query(
        description="server, isolated, or a named environment; default: isolated when the "
        "project has requirements.txt or pyproject.toml dependencies, else server"
    ),
]

router = APIRouter(prefix="/runs", tags=["runs"])

Command = Annotated[
    list[str], Query(description="The command and its arguments, one parameter each")
]


@router.post(
    "",
    status_code=201,
    summary="Start a run",
    description=(
        "The body is the project as a .tar.gz archive (Content-Type: application/gzip). The "
        "run is queued, then executed on the server in a fresh copy of the project. With "
        "'model', 'file' and 'function', a run that exits with status 0 publishes its "
        "directory as the next version of that model."
    ),
)
async def create_run(
    request: Request,
    services: ServicesDep,
    user: UserDep,
    command: Command,
    model: Annotated[str | None, Query(description="Model to publish to on success")] = None,
    file: Annotated[str | None, Query(description="Script to publish, e.g. predict.py")] = None,
    function: Annotated[str | None, Query(description="Function to publish")] = None,
    timeout_seconds: Annotated[float | None, Query(description="Time the run may take")] = None,
    description: Annotated[str, Query()] = "",
    environment: Environment = None,
) -> dict[str, Any]:
    # Checked before the upload is read, so a mistake costs no upload.
    check_archive_type(request)
    await asyncio.to_thread(
        ops.check_run, services, user, command, model, file, function, timeout_seconds, environment
    )
    async with received_archive(request, services) as upload:
        run = await asyncio.to_thread(
            ops.create_run,
            services,
            user,
            archive=upload,
            command=command,
            model=model,
            file=file,
            function=function,
            timeout_seconds=timeout_seconds,
            description=description,
            environment=environment,
        )
    return ops.run_view(services, run)


@router.get("", summary="List the runs you may see, newest first")
def list_runs(
    services: ServicesDep,
    user: UserDep,
    model: Annotated[str | None, Query(description="Only runs that publish to it")] = None,
    schedule: Annotated[str | None, Query(description="Only runs of this schedule")] = None,
    limit: Annotated[int, Query(description="At most this many, 1 to 1000")] = 50,
) -> dict[str, Any]:
    runs = ops.list_runs(services, user, model=model, schedule_id=schedule, limit=limit)
    return {"runs": runs}


@router.get("/{run_id}", summary="Show a run")
def show_run(run_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.run_view(services, ops.get_run(services, user, run_id, "view"))


@router.get("/{run_id}/logs", summary="Read a run's log from a byte offset")
def run_logs(
    run_id: str,
    services: ServicesDep,
    user: UserDep,
    offset: Annotated[
        int, Query(description="Byte offset, 0 or more; the answer gives the next")
    ] = 0,
) -> dict[str, Any]:
    return ops.read_log(services, ops.get_run(services, user, run_id, "view-logs"), offset)


@router.post("/{run_id}/cancel", summary="Cancel a queued or running run")
def cancel_run(run_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.run_view(services, ops.cancel_run(services, user, run_id))
