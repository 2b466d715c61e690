"""``/api/v1/models/{model}/captures``: a model's captured calls, downloaded, and drift reports."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from modelhost import errors
from modelhost.httpkit.bodies import allow_body
from modelhost.httpkit.deps import ServicesDep, UserDep
from modelhost.operations import captures as ops
from modelhost.operations.access_control import authorize

router = APIRouter(prefix="/models", tags=["captures"])


@router.get(
    "/{model}/captures",
    summary="Download the model's captured calls",
    description="A Parquet or CSV file, streamed: time, request_id, version, version_id, input "
    "and output (the request body and the result, as JSON text). Each download is an audit "
    "event capture-export.",
)
def export_captures(
    model: str,
    services: ServicesDep,
    user: UserDep,
    since: Annotated[
        str,
        Query(description="From when: 2026-12-01, 2026-12-01T09:30Z, or back from now: 24h, 7d"),
    ] = "36500d",
    version: Annotated[int | None, Query(description="Only this version's calls")] = None,
    output: Annotated[str, Query(alias="format", description="parquet or csv")] = "parquet",
) -> StreamingResponse:
    found = ops.export(services, user, model, since=since, version=version, output=output)
    return StreamingResponse(
        found.chunks,
        media_type=found.media_type,
        headers={"Content-Disposition": f'attachment; filename="{found.filename}"'},
    )


@router.post(
    "/{model}/captures/drift",
    summary="A drift report: captured inputs of a version against a reference",
    description="The body is the reference data set, a CSV file with a header row or a Parquet "
    "file, whose numeric columns are named as the calls' inputs; or send no body with "
    "reference=first-day to compare the version's first day of capture with what came after. "
    "Per numeric feature: the population stability index over 10 quantile bins of the "
    "reference, and both histograms.",
)
async def drift_report(
    model: str,
    request: Request,
    services: ServicesDep,
    user: UserDep,
    version: Annotated[
        int | None, Query(description="The version; default: the newest one captured")
    ] = None,
    reference: Annotated[
        str, Query(description="upload (the body, the default) or first-day")
    ] = "upload",
) -> dict[str, Any]:
    if reference not in ("upload", ops.FIRST_DAY):
        raise errors.BadRequest(
            f"Unknown reference '{reference}'; send the reference file as the body "
            f"(reference=upload) or ask for reference={ops.FIRST_DAY}."
        )
    authorize(services, user, model, "read-captures")  # before a large body is read
    limit = services.settings.max_reference_bytes
    allow_body(
        request,
        limit,
        errors.PayloadTooLarge(
            f"The reference is over {limit} bytes (setting max_reference_bytes); send a sample "
            "of it."
        ),
    )
    data = await request.body() if reference == "upload" else None
    return await asyncio.to_thread(
        ops.drift_report, services, user, model, version=version, reference=data
    )
