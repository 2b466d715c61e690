"""``/api/v1/groups`` (admins change them) and a group's role on a model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from modelhost.api.request_body import RequestBody
from modelhost.httpkit.deps import ServicesDep, UserDep
from modelhost.operations import groups

router = APIRouter(tags=["groups"])


class NewGroup(RequestBody):
    name: str = Field(description="URL-safe name, such as data-science")


class GroupRole(RequestBody):
    role: str = Field(description="viewer or editor")


@router.get("/groups", summary="List the groups and their members")
def list_groups(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"groups": groups.list_groups(services)}


@router.post("/groups", status_code=201, summary="Create a group (admins)")
def create_group(body: NewGroup, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return groups.create_group(services, user, body.name)


@router.delete("/groups/{group}", status_code=204, summary="Delete a group (admins)")
def delete_group(group: str, services: ServicesDep, user: UserDep) -> None:
    groups.delete_group(services, user, group)


@router.put("/groups/{group}/members/{username}", summary="Add a user to a group (admins)")
def add_member(group: str, username: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return groups.add_member(services, user, group, username)


@router.delete(
    "/groups/{group}/members/{username}",
    status_code=204,
    summary="Take a user out of a group (admins)",
)
def remove_member(group: str, username: str, services: ServicesDep, user: UserDep) -> None:
    groups.remove_member(services, user, group, username)


@router.put("/models/{model}/groups/{group}", summary="Give a group a role on a model")
def set_group_role(
    model: str, group: str, body: GroupRole, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return {"groups": groups.set_group_role(services, user, model, group, body.role)}


@router.delete(
    "/models/{model}/groups/{group}", status_code=204, summary="Take a group's role on a model"
)
def remove_group_role(model: str, group: str, services: ServicesDep, user: UserDep) -> None:
    groups.remove_group_role(services, user, model, group)
