"""The publish wizard: a new model or a new version from an uploaded archive (or, for admins,
a directory on the server), then the version's page, which follows the build."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import BinaryIO

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.responses import Response

from modelhost import errors
from modelhost.builder.bundles import extract_archive
from modelhost.builder.packing import collect_files, pack_project
from modelhost.db.repo import User
from modelhost.httpkit.deps import ServicesDep
from modelhost.httpkit.responses import JSONResponse
from modelhost.httpkit.uploads import allow_upload
from modelhost.operations import Services, access_control, environments, model_actions
from modelhost.operations import models as ops
from modelhost.operations import publish as publishing
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
        found = publishing.publishable(services, user, model)
        model, log_requests = found.name, found.log_requests
    context = {
        "user": access_control.user_view(user),
        "target": model,
        "log_requests": log_requests,
        "environments": _environment_choices(services),
    }
    return render(request, services, "publish.html", context)


@router.post("/publish", summary="Publish from the wizard: an archive, or a server path")
async def publish(request: Request, services: ServicesDep, user: SessionUser) -> Response:
    allow_upload(request, services)  # Starlette spools the archive to disk as it arrives
    await session.check_csrf(request)
    form = await forms.read(request)
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
    excludes = _patterns(forms.field(form, "exclude"))
    example = forms.field(form, "example").strip() or None
    try:
        if not name:
            raise errors.BadRequest("Enter the model's name, such as wine-quality.")
        if not file or not function:
            raise errors.BadRequest(
                "Enter the script and the function to call, such as predict.py and predict."
            )
        wanted = publishing.PublishRequest(
            name,
            file,
            function,
            description=description,
            environment=environment,
            python=python,
            example=example,
        )
        publishing.check_publish(services, user, wanted)
        archive = await _archive(services, user, upload, server_path, excludes)
        try:
            model, version = await asyncio.to_thread(
                publishing.publish_version, services, user, wanted, archive
            )
        finally:
            archive.close()
        if log_requests != model.log_requests:
            await asyncio.to_thread(
                model_actions.change_settings,
                services,
                user,
                model_actions.SettingsChange(model.name, log_requests=log_requests),
            )
    except errors.ModelhostError as exc:
        if wants_json(request):
            raise
        context = {
            "user": access_control.user_view(user),
            "target": forms.field(form, "target"),
            "log_requests": log_requests,
            "error": exc.message,
            "environments": _environment_choices(services),
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
                    "exclude",
                    "example",
                )
            },
        }
        return render(request, services, "publish.html", context, status=exc.status)
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


def _patterns(text: str) -> list[str]:
    """The exclude patterns field: gitignore patterns, one a line or separated by commas."""
    return [p.strip() for line in text.splitlines() for p in line.split(",") if p.strip()]


async def _archive(
    services: Services,
    user: User,
    upload: UploadFile | str | None,
    server_path: str,
    excludes: list[str],
) -> BinaryIO:
    """The project as a .tar.gz: the uploaded archive or the server directory, minus
    ``excludes`` (as ``modelhost publish --exclude`` leaves them out)."""
    if server_path:
        ensure_admin(user, "publish from a path on the server")
        root = Path(server_path)
        if not root.is_absolute() or not root.is_dir():
            raise errors.BadRequest(
                f"'{server_path}' is not a directory on the server; give an absolute path."
            )
        files = await asyncio.to_thread(collect_files, root, excludes)
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
    if not excludes:
        return spooled  # type: ignore[return-value]
    try:
        return await asyncio.to_thread(_without, services, spooled, excludes)  # type: ignore[arg-type]
    finally:
        spooled.close()


def _without(services: Services, archive: BinaryIO, excludes: list[str]) -> BinaryIO:
    """``archive`` packed again without the files ``excludes`` match."""
    settings = services.settings
    scratch = settings.home_path / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="wizard-") as staging:
        root = Path(staging)
        extract_archive(
            archive, root, max_bytes=settings.max_bundle_bytes, max_files=settings.max_bundle_files
        )
        files = collect_files(root, excludes)
        packed = pack_project(root, files, max_bytes=settings.max_bundle_bytes)
        # pack_project's archive is a temporary file, which outlives the directory
        return packed


def _environment_choices(services: Services) -> list[dict[str, str]]:
    """Named environments for the wizard's list: name and what they are."""
    return [
        {
            "name": e["name"],
            "what": f"R library {e['r_library']}"
            if e.get("kind") == "r"
            else f"Python {e['python_version']} environment",
        }
        for e in environments.list_latest(services)
    ]
