"""The management actions that share a model and manage who signs in, as the signed-in user:
access tokens, collaborators, visibility and invocation mode, ownership, users and API keys.

As in :mod:`modelhost.operations.model_actions`: each checks the permission the action table
gives it, does the work with :mod:`modelhost.operations.access_control`, and records its event
in the same transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from modelhost.db.repo import User
from modelhost.events import (
    ACCESS_CHANGE,
    COLLABORATOR_REMOVE,
    COLLABORATOR_SET,
    KEY_CREATE,
    KEY_REVOKE,
    TOKEN_CREATE,
    TOKEN_REGENERATE,
    TOKEN_REVOKE,
    TOKEN_UPDATE,
    TRANSFER,
    USER_ADD,
    USER_DISABLE,
)
from modelhost.operations import Services, access_control
from modelhost.operations import models as ops
from modelhost.operations.access_control import authorize_action
from modelhost.operations.audit import audited

# --------------------------------------------------------------------------- tokens


def create_token(
    services: Services,
    actor: User,
    model: str,
    name: str,
    *,
    rate: str | None = None,
    quota: str | None = None,
) -> dict[str, Any]:
    """A new access token for ``model``, with a rate and a quota when given (``50/s``,
    ``100000/day``); its secret is in the answer, and only there."""
    found = authorize_action(services, actor, model, TOKEN_CREATE)
    with audited(services, actor, TOKEN_CREATE, model=found) as audit:
        created = access_control.create_token(services, actor, found, name, rate=rate, quota=quota)
        audit.detail.update(token=created["id"], name=created["name"])
        for key in ("rate", "quota"):
            if created[key] is not None:
                audit.detail[key] = created[key]
    return created


def update_token(
    services: Services,
    actor: User,
    model: str,
    token_id: str,
    *,
    rate: str | None = None,
    quota: str | None = None,
) -> dict[str, Any]:
    """Change a token's rate or quota (None: as it is; ``"none"``: no limit); the event
    records both, before and after."""
    found = authorize_action(services, actor, model, TOKEN_UPDATE)
    with audited(services, actor, TOKEN_UPDATE, model=found, detail={"token": token_id}) as audit:
        before, view = access_control.update_token(
            services, found, token_id, rate=rate, quota=quota
        )
        audit.detail.update(
            token=before.id,
            name=before.name,
            rate={"from": before.rate_limit, "to": view["rate"]},
            quota={"from": before.quota, "to": view["quota"]},
        )
        return view


def revoke_token(services: Services, actor: User, model: str, token_id: str) -> None:
    """Revoke a token, named by its id or, when no other active token has it, its name."""
    found = authorize_action(services, actor, model, TOKEN_REVOKE)
    with audited(services, actor, TOKEN_REVOKE, model=found, detail={"token": token_id}) as audit:
        token = access_control.revoke_token(services, found, token_id)
        audit.detail.update(token=token.id, name=token.name)


def regenerate_token(services: Services, actor: User, model: str, token_id: str) -> dict[str, Any]:
    """A new secret for the same token (its id, or its name when unique); the old one stops
    working."""
    found = authorize_action(services, actor, model, TOKEN_REGENERATE)
    detail = {"token": token_id}
    with audited(services, actor, TOKEN_REGENERATE, model=found, detail=detail) as audit:
        regenerated = access_control.regenerate_token(services, found, token_id)
        audit.detail.update(token=regenerated["id"], name=regenerated["name"])
        return regenerated


# --------------------------------------------------------------------------- sharing


def set_collaborator(
    services: Services, actor: User, model: str, username: str, role: str
) -> dict[str, Any]:
    """Add or change a collaborator; the answer lists them all."""
    found = authorize_action(services, actor, model, COLLABORATOR_SET)
    detail = {"user": username, "role": role}
    with audited(services, actor, COLLABORATOR_SET, model=found, detail=detail):
        access_control.set_collaborator(services, found, username, role)
    return {"collaborators": access_control.collaborators(services, found)}


def remove_collaborator(services: Services, actor: User, model: str, username: str) -> None:
    found = authorize_action(services, actor, model, COLLABORATOR_REMOVE)
    with audited(services, actor, COLLABORATOR_REMOVE, model=found, detail={"user": username}):
        access_control.remove_collaborator(services, found, username)


@dataclass(frozen=True)
class AccessChange:
    """Visibility (public or private) and invocation mode (public or token); ``None``
    leaves one as it is."""

    model: str
    visibility: str | None = None
    invocation: str | None = None


def change_access(services: Services, actor: User, request: AccessChange) -> dict[str, Any]:
    found = authorize_action(services, actor, request.model, ACCESS_CHANGE)
    detail = {k: v for k, v in asdict(request).items() if k != "model" and v is not None}
    with audited(services, actor, ACCESS_CHANGE, model=found, detail=detail):
        updated = access_control.set_access(
            services, found, visibility=request.visibility, invocation=request.invocation
        )
    return ops.model_view(services, updated)


def transfer(services: Services, actor: User, model: str, to: str) -> dict[str, Any]:
    """Give the model to the user ``to``; the previous owner stays on as editor."""
    found = authorize_action(services, actor, model, TRANSFER)
    with audited(services, actor, TRANSFER, model=found, detail={"to": to}):
        updated = access_control.transfer(services, found, to)
    return ops.model_view(services, updated)


# --------------------------------------------------------------------------- users and keys


@dataclass(frozen=True)
class NewUser:
    username: str
    password: str
    is_admin: bool = False


def add_user(services: Services, actor: User, request: NewUser) -> dict[str, Any]:
    """A new user (admins); warns when code is not isolated, as their secrets are then
    readable by the other users' code."""
    detail = {"user": request.username, "is_admin": request.is_admin}
    with audited(services, actor, USER_ADD, detail=detail):
        created = access_control.add_user(
            services, actor, request.username, request.password, is_admin=request.is_admin
        )
    view = access_control.user_view(created)
    status = services.sandbox.status
    if not status.isolated:  # a second user can now read the first one's secrets
        view["warning"] = status.reason
    return view


def disable_user(services: Services, actor: User, username: str) -> dict[str, Any]:
    with audited(services, actor, USER_DISABLE, detail={"user": username}):
        disabled = access_control.disable_user(services, actor, username)
    return {**access_control.user_view(disabled), "disabled": True}


def create_key(
    services: Services, actor: User, name: str, expires_in_days: int | None = None
) -> dict[str, Any]:
    """A new API key for ``actor`` (shown once)."""
    with audited(services, actor, KEY_CREATE, detail={"name": name}):
        key = access_control.create_api_key(services, actor, name, expires_in_days)
    return {"api_key": key, "name": name}


def revoke_key(services: Services, actor: User, key_id: str) -> None:
    with audited(services, actor, KEY_REVOKE, detail={"key": key_id}):
        access_control.revoke_api_key(services, actor, key_id)
