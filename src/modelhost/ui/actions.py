"""What the UI's forms do: sign in and out, publish, and every model action.

Each model action calls the API's own route function, so it has the same permission check,
the same audit event and the same result as the API; the UI only turns the form into the API's
body and the outcome into a message. With ``Accept: application/json`` an action answers the
API's JSON instead of redirecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.responses import Response

from modelhost import errors
from modelhost.api import access as access_api
from modelhost.api import lifecycle as lifecycle_api
from modelhost.api import models as models_api
from modelhost.api.deps import ServicesDep
from modelhost.api.responses import JSONResponse
from modelhost.builder.bundles import collect_files, pack_project
from modelhost.db.repo import User
from modelhost.operations import Services, access, environments
from modelhost.operations import models as ops
from modelhost.operations import publish as publishing
from modelhost.operations.audit import audited
from modelhost.permissions import ensure_admin
from modelhost.ui import links, session
from modelhost.ui.pages import settings_context
from modelhost.ui.render import UIRoute, redirect, render, wants_json
from modelhost.ui.session import SessionUser

router = APIRouter(prefix=links.PREFIX, route_class=UIRoute, include_in_schema=False)


# --------------------------------------------------------------------------- sign in and out


@router.get("/sign-in", summary="The sign-in form")
def sign_in_page(request: Request, services: ServicesDep, next: str = "") -> Response:
    context = {"user": None, "next": _safe_next(next), "error": None, "username": ""}
    return render(request, services, "sign_in.html", context)


def _safe_next(target: str) -> str:
    """Only a path inside the UI, so the form cannot send anyone elsewhere."""
    if target.startswith(links.PREFIX + "/") and not target.startswith("//"):
        return target
    return links.models()


@router.post("/sign-in", summary="Sign in with a user name and password")
async def sign_in(request: Request, services: ServicesDep) -> Response:
    await session.check_csrf(request)
    form = await request.form()
    username, password = _field(form, "username"), _field(form, "password")
    api_key = _field(form, "api_key")
    target = _safe_next(_field(form, "next"))
    source = request.client.host if request.client else "unknown"
    try:
        if api_key:
            key = await asyncio.to_thread(
                access.login_with_key,
                services,
                api_key,
                source,
                session.SESSION_KEY_NAME,
                expires_in_days=session.SESSION_DAYS,
            )
        elif not username or not password:
            raise errors.BadRequest("Enter your user name and password.")
        else:
            key = await asyncio.to_thread(
                access.login,
                services,
                username,
                password,
                source,
                session.SESSION_KEY_NAME,
                expires_in_days=session.SESSION_DAYS,
            )
    except (errors.Unauthenticated, errors.BadRequest, errors.TooManyRequests) as exc:
        context = {"user": None, "next": target, "error": exc.message, "username": username}
        return render(request, services, "sign_in.html", context, status=exc.status)
    response = redirect(services, target)
    session.start_session(response, services, key, session.csrf_token(request))
    return response


@router.post("/sign-out", summary="Sign out: the session's key is revoked")
async def sign_out(request: Request, services: ServicesDep) -> Response:
    await session.check_csrf(request)
    key = session.session_key(request, services)
    if key:
        with contextlib.suppress(errors.Unauthenticated):
            user = session.session_user(request, services)
            await asyncio.to_thread(access.logout, services, user, key)
    response = redirect(services, links.sign_in(), notice="You are signed out.")
    session.end_session(response)
    return response


# --------------------------------------------------------------------------- form helpers


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _int(form: FormData, name: str, what: str) -> int | None:
    raw = _field(form, name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise errors.BadRequest(f"{what} must be a whole number, not '{raw}'.") from None


def _required_int(form: FormData, name: str, what: str) -> int:
    value = _int(form, name, what)
    if value is None:
        raise errors.BadRequest(f"Enter {what.lower()}.")
    return value


def _float(form: FormData, name: str, what: str) -> float | None:
    raw = _field(form, name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise errors.BadRequest(f"{what} must be a number of seconds, not '{raw}'.") from None


Handler = Callable[[Services, User, str, FormData], tuple[Any, str]]


def _deploy(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    number = _required_int(form, "version", "The version")
    body = lifecycle_api.VersionChoice(version=number)
    result = lifecycle_api.deploy(model, services, user, body)
    return result, f"Route '{result['route']}' moves to version {number} once it is ready."


def _rollback(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    result = lifecycle_api.rollback(model, services, user)
    return result, (
        f"Rolling back: route '{result['route']}' moves from version {result['from']} to "
        f"version {result['to']} once it is ready."
    )


def _promote(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    body = lifecycle_api.VersionChoice(version=_int(form, "version", "The version"))
    result = lifecycle_api.promote(model, services, user, body)
    return result, f"prod now points at version {result['version']}."


def _label(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = _field(form, "label")
    if not name:
        raise errors.BadRequest("Enter a label name, such as prod or staging.")
    body = lifecycle_api.LabelBody(
        version=_required_int(form, "version", "The version"),
        canary_version=_int(form, "canary_version", "The canary version"),
        canary_weight=_int(form, "canary_weight", "The canary weight") or 0,
    )
    result = lifecycle_api.set_label(model, name, body, services, user)
    canary = (
        f", {result['canary_weight']}% to version {result['canary_version']}"
        if result["canary_version"]
        else ""
    )
    return result, f"Label {name} -> version {result['version']}{canary}."


def _label_delete(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = _field(form, "label")
    lifecycle_api.delete_label(model, name, services, user)
    return None, f"Label {name} removed."


def _version_state(what: str) -> Handler:
    def handle(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
        number = _int(form, "version", "The version")
        body = lifecycle_api.VersionChoice(version=number)
        call = lifecycle_api.stop if what == "stop" else lifecycle_api.start
        result = call(model, services, user, body)
        subject = f"Version {number}" if number is not None else "The model"
        return result, f"{subject} {'stops' if what == 'stop' else 'starts'}."

    return handle


def _restart(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    result = lifecycle_api.restart(model, services, user)
    return result, "Every instance is being replaced, with zero downtime."


def _settings(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    body = models_api.ModelUpdate(
        description=form.get("description") if "description" in form else None,  # type: ignore[arg-type]
        instance_count=_int(form, "instance_count", "The instance count"),
        timeout_seconds=_float(form, "timeout_seconds", "The timeout"),
        routing_mode=_field(form, "routing_mode") or None,
        log_requests=(_field(form, "log_requests") == "on")
        if "log_requests_shown" in form
        else None,
    )
    result = models_api.update_model(model, body, services, user)
    return result, "Settings saved."


def _env_set(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = _field(form, "name")
    value = form.get("value")
    body = lifecycle_api.EnvBody(
        value=value if isinstance(value, str) else "", secret=_field(form, "secret") == "on"
    )
    result = lifecycle_api.set_env(model, name, body, services, user)
    kind = " (secret: it will not be shown again)" if body.secret else ""
    return result, f"{name} set{kind}; instances restart to pick it up."


def _env_unset(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = _field(form, "name")
    lifecycle_api.unset_env(model, name, services, user)
    return None, f"{name} removed; instances restart."


def _access(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    body = access_api.AccessBody(
        visibility=_field(form, "visibility") or None,
        invocation=_field(form, "invocation") or None,
    )
    result = access_api.set_access(model, body, services, user)
    return result, (
        f"Visibility is {result['visibility']}; invocation is {result['invocation_mode']}."
    )


def _token_revoke(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    access_api.revoke_token(model, _field(form, "token_id"), services, user)
    return None, "The token is revoked; calls with it are refused within a second."


def _collaborator(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    username, role = _field(form, "user"), _field(form, "role")
    if not username:
        raise errors.BadRequest("Enter the user name of the person to add.")
    body = access_api.Role(role=role)
    result = access_api.set_collaborator(model, username, body, services, user)
    return result, f"{username} is now {role}."


def _collaborator_remove(
    services: Services, user: User, model: str, form: FormData
) -> tuple[Any, str]:
    username = _field(form, "user")
    access_api.remove_collaborator(model, username, services, user)
    return None, f"{username} is no longer a collaborator."


def _transfer(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    to = _field(form, "user")
    if not to:
        raise errors.BadRequest("Enter the user name of the new owner.")
    result = access_api.transfer(model, access_api.Transfer(user=to), services, user)
    return result, f"{to} owns the model now; you stay on as editor."


def _unpublish(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    result = lifecycle_api.unpublish(model, services, user)
    return result, "The model is unpublished: its URLs answer 404; its data is kept."


#: form action -> (handler, the page to go back to)
ACTIONS: dict[str, tuple[Handler, str]] = {
    "deploy": (_deploy, "versions"),
    "rollback": (_rollback, "versions"),
    "promote": (_promote, "versions"),
    "label": (_label, "versions"),
    "label-delete": (_label_delete, "versions"),
    "stop": (_version_state("stop"), "versions"),
    "start": (_version_state("start"), "versions"),
    "restart": (_restart, "instances"),
    "settings": (_settings, "settings"),
    "env-set": (_env_set, "settings"),
    "env-unset": (_env_unset, "settings"),
    "access": (_access, "settings"),
    "token-revoke": (_token_revoke, "settings"),
    "collaborator-set": (_collaborator, "settings"),
    "collaborator-remove": (_collaborator_remove, "settings"),
    "transfer": (_transfer, "settings"),
    "unpublish": (_unpublish, "settings"),
}


_PAGES = ("versions", "instances", "settings")

#: the actions that answer with a token's secret, on the settings page, instead of redirecting
TOKEN_ACTIONS = ("token-create", "token-regenerate")


@router.post("/models/{model}/actions/{what}", summary="A model action from a form")
async def model_action(
    request: Request, model: str, what: str, services: ServicesDep, user: SessionUser
) -> Response:
    await session.check_csrf(request)
    if what in TOKEN_ACTIONS:
        return await _token_secret(request, model, what, services, user)
    if what not in ACTIONS:
        raise errors.NotFound(f"There is no action '{what}'.")
    handler, page = ACTIONS[what]
    form = await request.form()
    if _field(form, "back") in _PAGES:  # a form that lives on another page returns there
        page = _field(form, "back")
    back = links.model(model, page)
    try:
        result, message = await asyncio.to_thread(handler, services, user, model, form)
    except (errors.ModelNotFound, errors.Unauthenticated):
        raise
    except errors.ModelhostError as exc:
        if wants_json(request):
            raise
        return redirect(services, back, error=exc.message)
    if wants_json(request):
        return JSONResponse({"result": result, "message": message})
    if what == "transfer" and not user.is_admin:
        back = links.model(model)  # the previous owner may no longer see the settings
    return redirect(services, back, notice=message)


async def _token_secret(
    request: Request, model: str, what: str, services: Services, user: User
) -> Response:
    """Create or regenerate a token: the secret is on this one page and never again."""
    form = await request.form()
    try:
        if what == "token-create":
            name = _field(form, "name")
            created = await asyncio.to_thread(
                access_api.create_token, model, access_api.NewToken(name=name), services, user
            )
        else:
            created = await asyncio.to_thread(
                access_api.regenerate_token, model, _field(form, "token_id"), services, user
            )
    except (errors.ModelNotFound, errors.Unauthenticated):
        raise
    except errors.ModelhostError as exc:
        if wants_json(request):
            raise
        return redirect(services, links.model(model, "settings"), error=exc.message)
    if wants_json(request):
        return JSONResponse(created)
    context = settings_context(services, user, model)
    context["new_token"] = created
    response = render(request, services, "model/settings.html", context)
    response.headers["Cache-Control"] = "no-store"
    return response


# --------------------------------------------------------------------------- publish


@router.post("/publish", summary="Publish from the wizard: an archive, or a server path")
async def publish(request: Request, services: ServicesDep, user: SessionUser) -> Response:
    await session.check_csrf(request)
    form = await request.form()
    try:
        return await _publish(request, services, user, form)
    finally:
        await form.close()  # the uploaded archive's temporary file


async def _publish(request: Request, services: Services, user: User, form: FormData) -> Response:
    name = _field(form, "model")
    file, function = _field(form, "file"), _field(form, "function")
    description = _field(form, "description")
    log_requests = _field(form, "log_requests") == "on"
    environment = _field(form, "environment") or None
    python = _field(form, "python") or None
    upload = form.get("archive")
    server_path = _field(form, "server_path")
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
            "target": _field(form, "target"),
            "log_requests": log_requests,
            "error": exc.message,
            "environments": [e["name"] for e in environments.list_latest(services)],
            "form": {
                k: _field(form, k)
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
