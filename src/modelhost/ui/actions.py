"""What the UI's forms do: sign in and out, publish, and every model action.

Each model action calls the API's own route function, so it has the same permission check,
the same audit event and the same result as the API; the UI only turns the form into the API's
body and the outcome into a message. With ``Accept: application/json`` an action answers the
API's JSON instead of redirecting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from modelhost import errors
from modelhost.api import access as access_api
from modelhost.api import lifecycle as lifecycle_api
from modelhost.api import models as models_api
from modelhost.api.deps import ServicesDep
from modelhost.api.responses import JSONResponse
from modelhost.db.repo import User
from modelhost.operations import Services, access
from modelhost.ui import forms, links, session
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
    username, password = forms.field(form, "username"), forms.field(form, "password")
    api_key = forms.field(form, "api_key")
    target = _safe_next(forms.field(form, "next"))
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


# --------------------------------------------------------------------------- model actions


Handler = Callable[[Services, User, str, FormData], tuple[Any, str]]


def _deploy(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    number = forms.required_int(form, "version", "The version")
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
    body = lifecycle_api.VersionChoice(version=forms.optional_int(form, "version", "The version"))
    result = lifecycle_api.promote(model, services, user, body)
    return result, f"prod now points at version {result['version']}."


def _label(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = forms.field(form, "label")
    if not name:
        raise errors.BadRequest("Enter a label name, such as prod or staging.")
    body = lifecycle_api.LabelBody(
        version=forms.required_int(form, "version", "The version"),
        canary_version=forms.optional_int(form, "canary_version", "The canary version"),
        canary_weight=forms.optional_int(form, "canary_weight", "The canary weight") or 0,
    )
    result = lifecycle_api.set_label(model, name, body, services, user)
    canary = (
        f", {result['canary_weight']}% to version {result['canary_version']}"
        if result["canary_version"]
        else ""
    )
    return result, f"Label {name} -> version {result['version']}{canary}."


def _label_delete(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = forms.field(form, "label")
    lifecycle_api.delete_label(model, name, services, user)
    return None, f"Label {name} removed."


def _version_state(what: str) -> Handler:
    def handle(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
        number = forms.optional_int(form, "version", "The version")
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
        instance_count=forms.optional_int(form, "instance_count", "The instance count"),
        timeout_seconds=forms.optional_float(form, "timeout_seconds", "The timeout"),
        routing_mode=forms.field(form, "routing_mode") or None,
        log_requests=(forms.field(form, "log_requests") == "on")
        if "log_requests_shown" in form
        else None,
    )
    result = models_api.update_model(model, body, services, user)
    return result, "Settings saved."


def _env_set(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = forms.field(form, "name")
    value = form.get("value")
    body = lifecycle_api.EnvBody(
        value=value if isinstance(value, str) else "", secret=forms.field(form, "secret") == "on"
    )
    result = lifecycle_api.set_env(model, name, body, services, user)
    kind = " (secret: it will not be shown again)" if body.secret else ""
    return result, f"{name} set{kind}; instances restart to pick it up."


def _env_unset(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = forms.field(form, "name")
    lifecycle_api.unset_env(model, name, services, user)
    return None, f"{name} removed; instances restart."


def _access(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    body = access_api.AccessBody(
        visibility=forms.field(form, "visibility") or None,
        invocation=forms.field(form, "invocation") or None,
    )
    result = access_api.set_access(model, body, services, user)
    return result, (
        f"Visibility is {result['visibility']}; invocation is {result['invocation_mode']}."
    )


def _token_revoke(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    access_api.revoke_token(model, forms.field(form, "token_id"), services, user)
    return None, "The token is revoked; calls with it are refused within a second."


def _collaborator(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    username, role = forms.field(form, "user"), forms.field(form, "role")
    if not username:
        raise errors.BadRequest("Enter the user name of the person to add.")
    body = access_api.Role(role=role)
    result = access_api.set_collaborator(model, username, body, services, user)
    return result, f"{username} is now {role}."


def _collaborator_remove(
    services: Services, user: User, model: str, form: FormData
) -> tuple[Any, str]:
    username = forms.field(form, "user")
    access_api.remove_collaborator(model, username, services, user)
    return None, f"{username} is no longer a collaborator."


def _transfer(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    to = forms.field(form, "user")
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
    if forms.field(form, "back") in _PAGES:  # a form that lives on another page returns there
        page = forms.field(form, "back")
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
            name = forms.field(form, "name")
            created = await asyncio.to_thread(
                access_api.create_token, model, access_api.NewToken(name=name), services, user
            )
        else:
            created = await asyncio.to_thread(
                access_api.regenerate_token, model, forms.field(form, "token_id"), services, user
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
