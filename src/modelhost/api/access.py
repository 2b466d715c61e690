"""Sign-in, users, API keys, model access tokens, collaborators, access settings, transfer and
the audit log."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.responses import Response

from modelhost.api.request_body import RequestBody
from modelhost.httpkit.deps import ServicesDep, UserDep
from modelhost.operations import Services, access_control, groups, sharing
from modelhost.operations import audit as audit_ops
from modelhost.operations import captures as captures_ops
from modelhost.operations.access_control import authorize
from modelhost.permissions import ensure_admin

router = APIRouter(tags=["access"])
public_router = APIRouter(tags=["access"])


class Login(RequestBody):
    username: str
    password: str
    key_name: str = Field(default="login", description="Name for the API key it creates")


class NewUser(RequestBody):
    username: str
    password: str
    is_admin: bool = False


class NewKey(RequestBody):
    name: str
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class NewToken(RequestBody):
    name: str = Field(description="Who the token is for, such as billing-service")
    rate: str | None = Field(
        default=None, description="Calls per s, min or h, such as 50/s (none: no limit)"
    )
    quota: str | None = Field(
        default=None, description="Calls per UTC day or month, such as 100000/day (none: none)"
    )


class TokenLimits(RequestBody):
    rate: str | None = Field(
        default=None, description="New rate, such as 50/s; 'none' removes it; absent: kept"
    )
    quota: str | None = Field(
        default=None, description="New quota, such as 100000/day; 'none' removes it; absent: kept"
    )


class Role(RequestBody):
    role: str = Field(description="viewer or editor")


class AccessBody(RequestBody):
    visibility: str | None = Field(default=None, description="public or private")
    invocation: str | None = Field(default=None, description="public or token")


class Transfer(RequestBody):
    user: str


@public_router.post("/login", summary="Exchange a user name and password for a new API key")
def login(body: Login, request: Request, services: ServicesDep) -> dict[str, Any]:
    source = request.client.host if request.client else "unknown"
    key = access_control.login(services, body.username, body.password, source, body.key_name)
    return {"api_key": key, "username": body.username}


@router.get("/users", summary="List users (admins)")
def list_users(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    ensure_admin(user, "list users")
    return {"users": [access_control.user_view(u) for u in services.repo.list_users()]}


@router.post("/users", status_code=201, summary="Add a user (admins)")
def add_user(body: NewUser, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return sharing.add_user(services, user, sharing.NewUser(**body.model_dump()))


@router.post("/users/{username}/disable", summary="Disable a user (admins)")
def disable_user(username: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return sharing.disable_user(services, user, username)


@router.get("/keys", summary="List your API keys")
def list_keys(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"keys": access_control.list_api_keys(services, user)}


@router.post("/keys", status_code=201, summary="Create an API key (shown once)")
def create_key(body: NewKey, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return sharing.create_key(services, user, body.name, body.expires_in_days)


@router.delete("/keys/{key_id}", status_code=204, summary="Revoke one of your API keys")
def revoke_key(key_id: str, services: ServicesDep, user: UserDep) -> None:
    sharing.revoke_key(services, user, key_id)


@router.get("/models/{model}/tokens", summary="List a model's access tokens")
def list_tokens(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = authorize(services, user, model, "manage-tokens")
    return {"tokens": access_control.list_tokens(services, found)}


@router.post("/models/{model}/tokens", status_code=201, summary="Create an access token")
def create_token(
    model: str, body: NewToken, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return sharing.create_token(services, user, model, body.name, rate=body.rate, quota=body.quota)


@router.patch("/models/{model}/tokens/{token_id}", summary="Change a token's rate or quota")
def update_token(
    model: str, token_id: str, body: TokenLimits, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return sharing.update_token(services, user, model, token_id, rate=body.rate, quota=body.quota)


@router.delete("/models/{model}/tokens/{token_id}", status_code=204, summary="Revoke a token")
def revoke_token(model: str, token_id: str, services: ServicesDep, user: UserDep) -> None:
    sharing.revoke_token(services, user, model, token_id)


@router.post("/models/{model}/tokens/{token_id}/regenerate", summary="New secret, same token")
def regenerate_token(
    model: str, token_id: str, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return sharing.regenerate_token(services, user, model, token_id)


@router.get("/models/{model}/collaborators", summary="List a model's owner and collaborators")
def list_collaborators(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = authorize(services, user, model, "view")
    return {
        "collaborators": access_control.collaborators(services, found),
        "groups": groups.group_roles(services, found),
    }


@router.put("/models/{model}/collaborators/{username}", summary="Add or change a collaborator")
def set_collaborator(
    model: str, username: str, body: Role, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return sharing.set_collaborator(services, user, model, username, body.role)


@router.delete(
    "/models/{model}/collaborators/{username}", status_code=204, summary="Remove a collaborator"
)
def remove_collaborator(model: str, username: str, services: ServicesDep, user: UserDep) -> None:
    sharing.remove_collaborator(services, user, model, username)


@router.patch("/models/{model}/access", summary="Change visibility and invocation mode")
def set_access(
    model: str, body: AccessBody, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return sharing.change_access(services, user, sharing.AccessChange(model, **body.model_dump()))


@router.post("/models/{model}/transfer", summary="Give the model to another user")
def transfer(model: str, body: Transfer, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return sharing.transfer(services, user, model, body.user)


AuditFormat = Annotated[str, Query(pattern="^(json|csv)$", description="json or csv")]
AuditSince = Annotated[
    str | None,
    Query(
        description="From when: 2026-11-23, 2026-11-23T12:00Z (UTC unless it says), or back "
        "from now: 90m, 24h, 7d"
    ),
]


def _since(services: Services, text: str | None) -> dt.datetime | None:
    """``since`` read as captures read it: a date or time, or a time back from now."""
    return None if text is None else captures_ops.parse_since(text, services.clock())


#: what the audit routes answer, for the OpenAPI: JSON, or CSV with ``format=csv``
_AUDIT_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": '{"events": [event, ...]} newest first, or CSV with format=csv',
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}


def _answer(events: list[dict[str, Any]], output: str) -> Any:
    if output == "csv":
        return Response(audit_ops.to_csv(events), media_type="text/csv")
    return {"events": events}


@router.get(
    "/models/{model}/audit",
    summary="A model's audit events (viewers and above)",
    responses=_AUDIT_ANSWERS,
)
def model_audit(
    model: str,
    services: ServicesDep,
    user: UserDep,
    actor: str | None = None,
    action: str | None = None,
    since: AuditSince = None,
    format: AuditFormat = "json",
) -> Any:
    found = authorize(services, user, model, "view-audit")
    events = audit_ops.list_events(
        services, model_id=found.id, actor=actor, action=action, since=_since(services, since)
    )
    return _answer(events, format)


@router.get("/audit", summary="Every audit event (admins)", responses=_AUDIT_ANSWERS)
def server_audit(
    services: ServicesDep,
    user: UserDep,
    actor: str | None = None,
    action: str | None = None,
    since: AuditSince = None,
    format: AuditFormat = "json",
) -> Any:
    events = audit_ops.list_server_events(
        services, user, actor=actor, action=action, since=_since(services, since)
    )
    return _answer(events, format)
