"""The publish wizard: a new model or a new version from an uploaded archive (or, for admins,
a directory on the server), then the version's page, which follows the build."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.responses import Response

from modelhost import errors
from modelhost.api import models as models_api
from modelhost.api.deps import ServicesDep
from modelhost.api.responses import JSONResponse
from modelhost.builder.bundles import collect_files, pack_project
from modelhost.db.repo import User
from modelhost.operations import Services, access, environments
from modelhost.operations import models as ops
from modelhost.operations import publish as publishing
from modelhost.operations.access import authorize
from modelhost.operations.audit import audited
from modelhost.permissions import ensure_admin
from modelhost.ui import forms, links, session
from modelhost.ui.render import UIRoute, redirect, render, wants_json
from modelhost.ui.session import SessionUser

router = APIRouter(prefix=links.PREFIX, route_class=UIRoute, include_in_schema=False)


@router.get("/publish", summary="The publish wizard")
def publish_page(
    request: Request, services: ServicesDep, user: SessionUser, model: str = ""
) -> Response:
    log_requests = False
    if model:  # a new version of an existing model needs publish permission on it
        found = authorize(services, user, model, "publish")
        model, log_requests = found.name, found.log_requests
    context = {
        "user": access.user_view(user),
        "target": model,
        "log_requests": log_requests,
        "environments": [e["name"] for e in environments.list_latest(services)],
    }
    return render(request, services, "publish.html", context)


@router.post("/publish", summary="Publish from the wizard: an archive, or a server path")
async def publish(request: Request, services: ServicesDep, user: SessionUser) -> Response:
    await session.check_csrf(request)
    form = await request.form()
    try:
        return await _publish(request, services, user, form)
    finally:
        await form.close()  # the uploaded archive's temporary file


async def _publish(request: Request, services: Services, user: User, form: FormData) -> Response:
    name = forms.field(form, "model")
    file, function = forms.field(form, "file"), forms.field(form, "function")
    description = forms.field(form, "description")
    log_requests = forms.field(form, "log_requests") == "on"
    environment = forms.field(form, "environment") or None
    python = forms.field(form, "python") or None
    upload = form.get("archive")
    server_path = forms.field(form, "server_path")
    try:
        if not name:
            raise errors.BadRequest("Enter the model's name, such as wine-quality.")
        if not file or not function:
            raise errors.BadRequest(
                "Enter the script and the function to call, such as predict.py and predict."
            )
        existing = services.repo.find_model(name)
        if existing is None:
            publishing.validate_model_name(name)
        else:
            access.authorize(services, user, name, "publish", audit_as="publish")
        publishing.validate_entry_point(file, function)
        publishing.validate_environment(environment)
        archive = await _archive(services, user, upload, server_path)
        try:
            model, version = await asyncio.to_thread(
                _publish_audited,
                services,
                user,
                name,
                archive,
                Entry(file, function, description, environment, python),
            )
        finally:
            archive.close()
        if log_requests != model.log_requests:
            await asyncio.to_thread(
                models_api.update_model,
                model.name,
                models_api.ModelUpdate(log_requests=log_requests),
                services,
                user,
            )
    except errors.ModelhostError as exc:
        if wants_json(request):
            raise
        context = {
            "user": access.user_view(user),
            "target": forms.field(form, "target"),
            "log_requests": log_requests,
            "error": exc.message,
            "environments": [e["name"] for e in environments.list_latest(services)],
            "form": {
                k: forms.field(form, k)
                for k in (
                    "model",
                    "file",
                    "function",
                    "description",
                    "server_path",
                    "environment",
                    "python",
                )
            },
        }
        return render(request, services, "publish.html", context, status=exc.status)
    services.wake()
    if wants_json(request):
        return JSONResponse(
            {
                "model": ops.model_view(services, model),
                "version": ops.show_version(services, model, version.number),
            },
            status_code=201,
        )
    return redirect(
        services,
        links.version(model.name, version.number),
        notice=f"Version {version.number} of {model.name} is building.",
    )


async def _archive(
    services: Services, user: User, upload: UploadFile | str | None, server_path: str
) -> BinaryIO:
    if server_path:
        ensure_admin(user, "publish from a path on the server")
        root = Path(server_path)
        if not root.is_absolute() or not root.is_dir():
            raise errors.BadRequest(
                f"'{server_path}' is not a directory on the server; give an absolute path."
            )
        files = await asyncio.to_thread(collect_files, root)
        return await asyncio.to_thread(
            pack_project, root, files, max_bytes=services.settings.max_bundle_bytes
        )
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise errors.BadRequest("Choose the project archive (.tar.gz) to upload.")
    spooled = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - closed by caller
    while chunk := await upload.read(1 << 20):
        spooled.write(chunk)
    if not spooled.tell():
        spooled.close()
        raise errors.InvalidBundle(f"The file '{upload.filename}' is empty.")
    spooled.seek(0)
    return spooled  # type: ignore[return-value]


@dataclass(frozen=True)
class Entry:
    """What the wizard's form says about the version to publish."""

    file: str
    function: str
    description: str
    environment: str | None
    python: str | None


def _publish_audited(
    services: Services, user: User, name: str, archive: BinaryIO, entry: Entry
) -> Any:
    existing = services.repo.find_model(name)
    detail = {"entry_point": f"{entry.file}:{entry.function}"}
    if entry.environment:
        detail["environment"] = entry.environment
    with audited(services, user, "publish", model=existing, detail=detail) as audit:
        published = publishing.publish(
            services,
            name=name,
            archive=archive,
            file=entry.file,
            function=entry.function,
            description=entry.description,
            actor=user,
            environment=entry.environment,
            python=entry.python,
        )
        audit.model, audit.version = published[0], published[1].number
        return published
