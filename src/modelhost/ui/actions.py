"""What the UI's forms do: sign in and out, publish, and every model action.

Each model action calls the same operation as the API (:mod:`modelhost.operations`), so it has
the same permission check, validation, audit event and result; the UI only turns the form into
the operation's request and the outcome into a message. With ``Accept: application/json`` an
action answers the API's JSON instead of redirecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from modelhost import errors
from modelhost.db.repo import User
from modelhost.events import (
    COLLABORATOR_REMOVE,
    COLLABORATOR_SET,
    DEPLOY,
    ENV_SET,
    ENV_UNSET,
    GROUP_CREATE,
    GROUP_DELETE,
    GROUP_MEMBER_ADD,
    GROUP_MEMBER_REMOVE,
    GROUP_ROLE_REMOVE,
    GROUP_ROLE_SET,
    LABEL_DELETE,
    PROMOTE,
    RESTART,
    ROLLBACK,
    START,
    STOP,
    TOKEN_CREATE,
    TOKEN_REGENERATE,
    TOKEN_REVOKE,
    TOKEN_UPDATE,
    TRANSFER,
    UNPUBLISH,
)
from modelhost.httpkit.bodies import allow_body
from modelhost.httpkit.deps import ServicesDep
from modelhost.httpkit.responses import JSONResponse
from modelhost.httpkit.tester import tester_call
from modelhost.operations import Services, access_control, groups, sharing
from modelhost.operations import model_actions as actions
from modelhost.operations import predictions as predictions_ops
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


#: The sign-in form holds a user name and password (or an API key), a CSRF token and a path:
#: far less than any other body, and anyone may send it.
SIGN_IN_MAX_BYTES = 16 * 1024
_SIGN_IN_TOO_LARGE = errors.PayloadTooLarge(
    f"The sign-in form is over {SIGN_IN_MAX_BYTES} bytes; send only its own fields."
)


@router.post("/sign-in", summary="Sign in with a user name and password")
async def sign_in(request: Request, services: ServicesDep) -> Response:
    allow_body(request, SIGN_IN_MAX_BYTES, _SIGN_IN_TOO_LARGE)  # before anyone is known
    await session.check_csrf(request)
    form = await forms.read(request)
    username, password = forms.field(form, "username"), forms.field(form, "password")
    api_key = forms.field(form, "api_key")
    target = _safe_next(forms.field(form, "next"))
    source = request.client.host if request.client else "unknown"
    try:
        if api_key:
            key = await asyncio.to_thread(
                access_control.login_with_key,
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
                access_control.login,
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
            await asyncio.to_thread(access_control.logout, services, user, key)
    response = redirect(services, links.sign_in(), notice="You are signed out.")
    session.end_session(response)
    return response


# --------------------------------------------------------------------------- model actions


Handler = Callable[[Services, User, str, FormData], tuple[Any, str]]


def _deploy(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    number = forms.required_int(form, "version", "The version")
    result = actions.deploy(services, user, actions.VersionChoice(model, number))
    return result, f"Route '{result['route']}' moves to version {number} once it is ready."


def _rollback(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    result = actions.rollback(services, user, actions.VersionChoice(model))
    return result, (
        f"Rolling back: route '{result['route']}' moves from version {result['from']} to "
        f"version {result['to']} once it is ready."
    )


def _promote(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    number = forms.optional_int(form, "version", "The version")
    result = actions.promote(services, user, actions.VersionChoice(model, number))
    return result, f"prod now points at version {result['version']}."


def _label(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = forms.field(form, "label")
    if not name:
        raise errors.BadRequest("Enter a label name, such as prod or staging.")
    request = actions.LabelChange(
        model,
        name,
        version=forms.required_int(form, "version", "The version"),
        canary_version=forms.optional_int(form, "canary_version", "The canary version"),
        canary_weight=forms.optional_int(form, "canary_weight", "The canary weight") or 0,
    )
    result = actions.set_label(services, user, request)
    canary = (
        f", {result['canary_weight']}% to version {result['canary_version']}"
        if result["canary_version"]
        else ""
    )
    return result, f"Label {name} -> version {result['version']}{canary}."


def _label_delete(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = forms.field(form, "label")
    actions.delete_label(services, user, model, name)
    return None, f"Label {name} removed."


def _version_state(stop: bool) -> Handler:
    def handle(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
        number = forms.optional_int(form, "version", "The version")
        call = actions.stop if stop else actions.start
        result = call(services, user, actions.VersionChoice(model, number))
        subject = f"Version {number}" if number is not None else "The model"
        return result, f"{subject} {'stops' if stop else 'starts'}."

    return handle


def _restart(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    result = actions.restart(services, user, model)
    return result, "Every instance is being replaced, with zero downtime."


def _settings(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    shown = "log_requests_shown" in form  # the checkboxes are on this form
    description = form.get("description")
    request = actions.SettingsChange(
        model,
        description=description if isinstance(description, str) else None,
        instance_count=forms.optional_int(form, "instance_count", "The instance count"),
        timeout_seconds=forms.optional_float(form, "timeout_seconds", "The timeout"),
        routing_mode=forms.field(form, "routing_mode") or None,
        log_requests=(forms.field(form, "log_requests") == "on") if shown else None,
        network=(forms.field(form, "network") == "on") if shown else None,
        capture=(forms.field(form, "capture") == "on") if shown else None,
        capture_share=forms.optional_float(form, "capture_share", "The share of calls captured"),
        tier=forms.field(form, "tier") if "tier" in form else None,
    )
    result = actions.change_settings(services, user, request)
    return result, "Settings saved."


def _batching(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    number = forms.optional_int(form, "version", "The version")
    if number is None:
        raise errors.BadRequest("Say which version's batching limits to change.")
    request = actions.BatchingChange(
        model,
        number,
        batch_max_size=forms.optional_int(form, "batch_max_size", "The largest batch"),
        batch_max_wait_ms=forms.optional_float(form, "batch_max_wait_ms", "The longest wait"),
    )
    result = actions.change_batching(services, user, request)
    return result, f"Version {number}'s batching limits saved."


def _env_set(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = forms.field(form, "name")
    value = form.get("value")
    request = actions.EnvChange(
        model,
        name,
        value=value if isinstance(value, str) else "",
        secret=forms.field(form, "secret") == "on",
    )
    result = actions.set_env(services, user, request)
    kind = " (secret: it will not be shown again)" if request.secret else ""
    return result, f"{name} set{kind}; instances restart to pick it up."


def _env_unset(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name = forms.field(form, "name")
    actions.unset_env(services, user, model, name)
    return None, f"{name} removed; instances restart."


def _access(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    request = sharing.AccessChange(
        model,
        visibility=forms.field(form, "visibility") or None,
        invocation=forms.field(form, "invocation") or None,
    )
    result = sharing.change_access(services, user, request)
    return result, (
        f"Visibility is {result['visibility']}; invocation is {result['invocation_mode']}."
    )


def _token_revoke(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    sharing.revoke_token(services, user, model, forms.field(form, "token_id"))
    return None, "The token is revoked; calls with it are refused within a second."


def _token_update(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    # an empty field removes that limit: the form shows each one as it is
    rate = forms.field(form, "rate") or "none"
    quota = forms.field(form, "quota") or "none"
    updated = sharing.update_token(
        services, user, model, forms.field(form, "token_id"), rate=rate, quota=quota
    )
    return updated, f"The limits of {updated['name']} are saved; calls see them within a second."


def _collaborator(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    username, role = forms.field(form, "user"), forms.field(form, "role")
    if not username:
        raise errors.BadRequest("Enter the user name of the person to add.")
    result = sharing.set_collaborator(services, user, model, username, role)
    return result, f"{username} is now {role}."


def _collaborator_remove(
    services: Services, user: User, model: str, form: FormData
) -> tuple[Any, str]:
    username = forms.field(form, "user")
    sharing.remove_collaborator(services, user, model, username)
    return None, f"{username} is no longer a collaborator."


def _group_role(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    name, role = forms.field(form, "group"), forms.field(form, "role")
    if not name:
        raise errors.BadRequest("Enter the name of the group, from the Groups page.")
    result = groups.set_group_role(services, user, model, name, role)
    return {"groups": result}, f"The group {name} is now {role}."


def _group_role_remove(
    services: Services, user: User, model: str, form: FormData
) -> tuple[Any, str]:
    name = forms.field(form, "group")
    groups.remove_group_role(services, user, model, name)
    return None, f"The group {name} no longer has a role on the model."


def _transfer(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    to = forms.field(form, "user")
    if not to:
        raise errors.BadRequest("Enter the user name of the new owner.")
    result = sharing.transfer(services, user, model, to)
    return result, f"{to} owns the model now; you stay on as editor."


def _unpublish(services: Services, user: User, model: str, form: FormData) -> tuple[Any, str]:
    result = actions.unpublish(services, user, model)
    return result, "The model is unpublished: its URLs answer 404; its data is kept."


#: form action -> (handler, the page to go back to); a form that does one management action
#: is named as the action is in the audit log
ACTIONS: dict[str, tuple[Handler, str]] = {
    DEPLOY.name: (_deploy, "versions"),
    ROLLBACK.name: (_rollback, "versions"),
    PROMOTE.name: (_promote, "versions"),
    "label": (_label, "versions"),
    LABEL_DELETE.name: (_label_delete, "versions"),
    STOP.name: (_version_state(stop=True), "versions"),
    START.name: (_version_state(stop=False), "versions"),
    RESTART.name: (_restart, "instances"),
    "settings": (_settings, "settings"),
    "batching": (_batching, "settings"),
    ENV_SET.name: (_env_set, "settings"),
    ENV_UNSET.name: (_env_unset, "settings"),
    "access": (_access, "settings"),
    TOKEN_REVOKE.name: (_token_revoke, "settings"),
    TOKEN_UPDATE.name: (_token_update, "settings"),
    COLLABORATOR_SET.name: (_collaborator, "settings"),
    COLLABORATOR_REMOVE.name: (_collaborator_remove, "settings"),
    GROUP_ROLE_SET.name: (_group_role, "settings"),
    GROUP_ROLE_REMOVE.name: (_group_role_remove, "settings"),
    TRANSFER.name: (_transfer, "settings"),
    UNPUBLISH.name: (_unpublish, "settings"),
}


_PAGES = ("versions", "instances", "settings")

#: the actions that answer with a token's secret, on the settings page, instead of redirecting
TOKEN_ACTIONS = (TOKEN_CREATE.name, TOKEN_REGENERATE.name)


@router.post("/models/{model}/test", summary="The tester's call, through the session")
async def call_from_tester(
    request: Request,
    model: str,
    services: ServicesDep,
    user: SessionUser,
    route: str = "latest",
    run_async: Annotated[bool, Query(alias="async")] = False,
) -> Response:
    await session.check_csrf(request)
    return await tester_call(request, services, user, model, route, run_async)


@router.get(
    "/models/{model}/predictions/{prediction_id}",
    summary="An asynchronous prediction, for the tester to poll",
)
async def tester_prediction(
    model: str, prediction_id: str, services: ServicesDep, user: SessionUser
) -> dict[str, Any]:
    found = await asyncio.to_thread(
        predictions_ops.find_for_user, services, user, model, prediction_id
    )
    return predictions_ops.view(found)


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
    form = await forms.read(request)
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
    if what == TRANSFER.name and not user.is_admin:
        back = links.model(model)  # the previous owner may no longer see the settings
    return redirect(services, back, notice=message)


# --------------------------------------------------------------------------- groups (admins)

GroupHandler = Callable[[Services, User, FormData], tuple[Any, str]]


def _group_create(services: Services, user: User, form: FormData) -> tuple[Any, str]:
    name = forms.field(form, "group")
    return groups.create_group(services, user, name), f"Group {name} created."


def _group_delete(services: Services, user: User, form: FormData) -> tuple[Any, str]:
    name = forms.field(form, "group")
    groups.delete_group(services, user, name)
    return None, f"Group {name} deleted; its members lost the roles they held through it."


def _member_add(services: Services, user: User, form: FormData) -> tuple[Any, str]:
    name, username = forms.field(form, "group"), forms.field(form, "user")
    if not username:
        raise errors.BadRequest("Enter the user name of the person to add.")
    return groups.add_member(services, user, name, username), f"{username} is in {name}."


def _member_remove(services: Services, user: User, form: FormData) -> tuple[Any, str]:
    name, username = forms.field(form, "group"), forms.field(form, "user")
    groups.remove_member(services, user, name, username)
    return None, f"{username} is no longer in {name}."


GROUP_ACTIONS: dict[str, GroupHandler] = {
    GROUP_CREATE.name: _group_create,
    GROUP_DELETE.name: _group_delete,
    GROUP_MEMBER_ADD.name: _member_add,
    GROUP_MEMBER_REMOVE.name: _member_remove,
}


@router.post("/groups/actions/{what}", summary="A change to the groups, from a form (admins)")
async def group_action(
    request: Request, what: str, services: ServicesDep, user: SessionUser
) -> Response:
    await session.check_csrf(request)
    handler = GROUP_ACTIONS.get(what)
    if handler is None:
        raise errors.NotFound(f"There is no action '{what}'.")
    form = await forms.read(request)
    try:
        result, message = await asyncio.to_thread(handler, services, user, form)
    except errors.Unauthenticated:
        raise
    except errors.ModelhostError as exc:
        if wants_json(request):
            raise
        return redirect(services, links.groups(), error=exc.message)
    if wants_json(request):
        return JSONResponse({"result": result, "message": message})
    return redirect(services, links.groups(), notice=message)


async def _token_secret(
    request: Request, model: str, what: str, services: Services, user: User
) -> Response:
    """Create or regenerate a token: the secret is on this one page and never again."""
    form = await forms.read(request)
    try:
        if what == TOKEN_CREATE.name:
            created = await asyncio.to_thread(
                functools.partial(
                    sharing.create_token,
                    services,
                    user,
                    model,
                    forms.field(form, "name"),
                    rate=forms.field(form, "rate") or None,
                    quota=forms.field(form, "quota") or None,
                )
            )
        else:
            token_id = forms.field(form, "token_id")
            created = await asyncio.to_thread(
                sharing.regenerate_token, services, user, model, token_id
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
