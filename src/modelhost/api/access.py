"""Sign-in, users, API keys, model access tokens, collaborators, access settings, transfer and
the audit log."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from modelhost.api.deps import ServicesDep, UserDep
from modelhost.operations import access
from modelhost.operations import audit as audit_ops
from modelhost.operations import models as ops
from modelhost.operations.access import authorize
from modelhost.operations.audit import audited
from modelhost.permissions import ensure_admin

router = APIRouter(tags=["access"])
public_router = APIRouter(tags=["access"])


class Login(BaseModel):
    username: str
    password: str
    key_name: str = Field(default="login", description="Name for the API key it creates")


class NewUser(BaseModel):
    username: str
    password: str
    is_admin: bool = False


class NewKey(BaseModel):
    name: str
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class NewToken(BaseModel):
    name: str = Field(description="Who the token is for, such as billing-service")


class Role(BaseModel):
    role: str = Field(description="viewer or editor")


class AccessBody(BaseModel):
    visibility: str | None = Field(default=None, description="public or private")
    invocation: str | None = Field(default=None, description="public or token")


class Transfer(BaseModel):
    user: str


@public_router.post("/login", summary="Exchange a user name and password for a new API key")
def login(body: Login, request: Request, services: ServicesDep) -> dict[str, Any]:
    source = request.client.host if request.client else "unknown"
    key = access.login(services, body.username, body.password, source, body.key_name)
    return {"api_key": key, "username": body.username}


@router.get("/users", summary="List users (admins)")
def list_users(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    ensure_admin(user, "list users")
    return {"users": [access.user_view(u) for u in services.repo.list_users()]}


@router.post("/users", status_code=201, summary="Add a user (admins)")
def add_user(body: NewUser, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    with audited(
        services, user, "user-add", detail={"user": body.username, "is_admin": body.is_admin}
    ):
        created = access.add_user(
            services, user, body.username, body.password, is_admin=body.is_admin
        )
    return access.user_view(created)


@router.post("/users/{username}/disable", summary="Disable a user (admins)")
def disable_user(username: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    with audited(services, user, "user-disable", detail={"user": username}):
        disabled = access.disable_user(services, user, username)
    return {**access.user_view(disabled), "disabled": True}


@router.get("/keys", summary="List your API keys")
def list_keys(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"keys": access.list_api_keys(services, user)}


@router.post("/keys", status_code=201, summary="Create an API key (shown once)")
def create_key(body: NewKey, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    with audited(services, user, "key-create", detail={"name": body.name}):
        key = access.create_api_key(services, user, body.name, body.expires_in_days)
    return {"api_key": key, "name": body.name}


@router.delete("/keys/{key_id}", status_code=204, summary="Revoke one of your API keys")
def revoke_key(key_id: str, services: ServicesDep, user: UserDep) -> None:
    with audited(services, user, "key-revoke", detail={"key": key_id}):
        access.revoke_api_key(services, user, key_id)


@router.get("/models/{model}/tokens", summary="List a model's access tokens")
def list_tokens(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = authorize(services, user, model, "manage-tokens")
    return {"tokens": access.list_tokens(services, found)}


@router.post("/models/{model}/tokens", status_code=201, summary="Create an access token")
def create_token(
    model: str, body: NewToken, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    found = authorize(services, user, model, "manage-tokens", audit_as="token-create")
    with audited(services, user, "token-create", model=found) as audit:
        created = access.create_token(services, user, found, body.name)
        audit.detail.update(token=created["id"], name=created["name"])
    return created


@router.delete("/models/{model}/tokens/{token_id}", status_code=204, summary="Revoke a token")
def revoke_token(model: str, token_id: str, services: ServicesDep, user: UserDep) -> None:
    found = authorize(services, user, model, "manage-tokens", audit_as="token-revoke")
    with audited(services, user, "token-revoke", model=found, detail={"token": token_id}):
        access.revoke_token(services, found, token_id)


@router.post("/models/{model}/tokens/{token_id}/regenerate", summary="New secret, same token")
def regenerate_token(
    model: str, token_id: str, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    found = authorize(services, user, model, "manage-tokens", audit_as="token-regenerate")
    with audited(services, user, "token-regenerate", model=found, detail={"token": token_id}):
        return access.regenerate_token(services, found, token_id)


@router.get("/models/{model}/collaborators", summary="List a model's owner and collaborators")
def list_collaborators(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = authorize(services, user, model, "view")
    return {"collaborators": access.collaborators(services, found)}


@router.put("/models/{model}/collaborators/{username}", summary="Add or change a collaborator")
def set_collaborator(
    model: str, username: str, body: Role, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    found = authorize(services, user, model, "manage-collaborators", audit_as="collaborator-set")
    with audited(
        services,
        user,
        "collaborator-set",
        model=found,
        detail={"user": username, "role": body.role},
    ):
        access.set_collaborator(services, found, username, body.role)
    return {"collaborators": access.collaborators(services, found)}


@router.delete(
    "/models/{model}/collaborators/{username}", status_code=204, summary="Remove a collaborator"
)
def remove_collaborator(model: str, username: str, services: ServicesDep, user: UserDep) -> None:
    found = authorize(services, user, model, "manage-collaborators", audit_as="collaborator-remove")
    with audited(services, user, "collaborator-remove", model=found, detail={"user": username}):
        access.remove_collaborator(services, found, username)


@router.patch("/models/{model}/access", summary="Change visibility and invocation mode")
def set_access(
    model: str, body: AccessBody, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    found = authorize(services, user, model, "change-access", audit_as="access-change")
    with audited(
        services, user, "access-change", model=found, detail=body.model_dump(exclude_none=True)
    ):
        updated = access.set_access(
            services, found, visibility=body.visibility, invocation=body.invocation
        )
    return ops.model_view(services, updated)


@router.post("/models/{model}/transfer", summary="Give the model to another user")
def transfer(model: str, body: Transfer, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = authorize(services, user, model, "transfer", audit_as="transfer")
    with audited(services, user, "transfer", model=found, detail={"to": body.user}):
        updated = access.transfer(services, found, body.user)
    return ops.model_view(services, updated)


AuditFormat = Annotated[str, Query(pattern="^(json|csv)$", description="json or csv")]


def _audit(
    services: ServicesDep,
    model_id: str | None,
    actor: str | None,
    action: str | None,
    since: dt.datetime | None,
    output: str,
) -> Any:
    if since is not None:  # naive times are UTC; others are converted to UTC
        since = (
            since.replace(tzinfo=dt.timezone.utc)
            if since.tzinfo is None
            else since.astimezone(dt.timezone.utc)
        )
    events = [
        audit_ops.event_view(e)
        for e in services.repo.audit_events(
            model_id=model_id, actor=actor, action=action, since=since
        )
    ]
    if output == "csv":
        return Response(audit_ops.to_csv(events), media_type="text/csv")
    return {"events": events}


@router.get("/models/{model}/audit", summary="A model's audit events (viewers and above)")
def model_audit(
    model: str,
    services: ServicesDep,
    user: UserDep,
    actor: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
    format: AuditFormat = "json",
) -> Any:
    found = authorize(services, user, model, "view-audit")
    return _audit(services, found.id, actor, action, since, format)


@router.get("/audit", summary="Every audit event (admins)")
def server_audit(
    services: ServicesDep,
    user: UserDep,
    actor: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
    format: AuditFormat = "json",
) -> Any:
    ensure_admin(user, "read the server-wide audit log")
    return _audit(services, None, actor, action, since, format)
