"""The drift page: a version's captured inputs against a reference, PSI per feature (flagged
above 0.2) and both histograms, drawn on the server."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from modelhost import errors
from modelhost.db.repo import User
from modelhost.httpkit.bodies import allow_body
from modelhost.httpkit.deps import ServicesDep
from modelhost.operations import Services
from modelhost.operations import captures as ops
from modelhost.operations import models as model_ops
from modelhost.ui import charts, forms, links, session
from modelhost.ui.pages import _model_page, model_context
from modelhost.ui.render import UIRoute, render
from modelhost.ui.session import SessionUser

router = APIRouter(prefix=links.PREFIX, route_class=UIRoute, include_in_schema=False)


def _page(
    request: Request,
    services: Services,
    user: User,
    model: str,
    version: int | None,
    report: dict[str, Any] | None,
) -> Response:
    found = model_context(services, user, model, "read-captures")
    context = _model_page(
        services,
        user,
        found,
        "drift",
        versions=[v["number"] for v in model_ops.list_versions(services, found)],
        version=version,
        report=report,
    )
    if report is not None:
        context["version"] = report["version"]
        context["histograms"] = {
            feature["name"]: charts.histogram(
                f"{feature['name']}: reference and captured share per bin",
                [
                    (_bin_label(b["low"], b["high"]), b["reference_share"], b["captured_share"])
                    for b in feature["bins"]
                ],
            )
            for feature in report["features"]
        }
        context["legend"] = charts.legend(["reference", "captured"])
    return render(request, services, "model/drift.html", context)


def _bin_label(low: float | None, high: float | None) -> str:
    return (
        f"({'-inf' if low is None else f'{low:.4g}'}, {'inf' if high is None else f'{high:.4g}'}]"
    )


@router.get("/models/{model}/drift", summary="Drift of a version's captured inputs")
async def drift_page(
    request: Request,
    model: str,
    services: ServicesDep,
    user: SessionUser,
    version: Annotated[int | None, Query()] = None,
    reference: Annotated[str | None, Query(description="first-day")] = None,
) -> Response:
    report = None
    if reference is not None:
        if reference != ops.FIRST_DAY:
            raise errors.BadRequest(
                f"Unknown reference '{reference}'; choose the first day of capture or upload "
                "a file."
            )
        report = await asyncio.to_thread(
            ops.drift_report, services, user, model, version=version, reference=None
        )
    return _page(request, services, user, model, version, report)


@router.post("/models/{model}/drift", summary="Drift against an uploaded reference file")
async def drift_upload(
    request: Request, model: str, services: ServicesDep, user: SessionUser
) -> Response:
    limit = services.settings.max_reference_bytes
    allow_body(
        request,
        limit,
        errors.PayloadTooLarge(f"The reference is over {limit} bytes (max_reference_bytes)."),
    )
    await session.check_csrf(request)  # first, as every form: a forged one learns nothing
    model_context(services, user, model, "read-captures")
    form = await forms.read(request)
    version = forms.optional_int(form, "version", "The version")
    upload = form.get("reference")
    try:
        data = await upload.read() if isinstance(upload, UploadFile) else b""
    finally:
        await form.close()  # the upload's temporary file
    report = await asyncio.to_thread(
        ops.drift_report, services, user, model, version=version, reference=data
    )
    return _page(request, services, user, model, version, report)
