"""Groups: named sets of users that hold roles on models, so that the people who build models
and the people who deploy them can be given their roles once, as teams.

Server admins create and delete groups and choose their members; a model's owner gives a group
a role on the model as they would a user. A user's role on a model is the highest of their own
role and their groups' roles (:func:`modelhost.operations.access_control.roles_on`). Every
change is recorded in the audit log, in the same transaction.
"""

from __future__ import annotations

from typing import Any

from modelhost import errors
from modelhost.db.repo import Group, Model, User
from modelhost.events import (
    GROUP_CREATE,
    GROUP_DELETE,
    GROUP_MEMBER_ADD,
    GROUP_MEMBER_REMOVE,
    GROUP_ROLE_REMOVE,
    GROUP_ROLE_SET,
)
from modelhost.names import NAME_PATTERN
from modelhost.operations import Services, iso
from modelhost.operations.access_control import authorize_action, find_user
from modelhost.operations.audit import audited
from modelhost.permissions import ROLES, ensure_admin


def find_group(services: Services, name: str) -> Group:
    group = services.repo.find_group(name)
    if group is None:
        raise errors.NotFound(f"There is no group '{name}'. 'modelhost groups list' shows them.")
    return group


def group_view(services: Services, group: Group, members: list[str]) -> dict[str, Any]:
    names = services.repo.usernames(members)
    return {
        "id": group.id,
        "name": group.name,
        "members": sorted(names.get(m, m) for m in members),
        "created_at": iso(group.created_at),
    }


def list_groups(services: Services) -> list[dict[str, Any]]:
    """Every group with its members (any signed-in user may see them, to share with them)."""
    members = services.repo.members()
    return [group_view(services, g, members.get(g.id, [])) for g in services.repo.list_groups()]


def show_group(services: Services, name: str) -> dict[str, Any]:
    group = find_group(services, name)
    return group_view(services, group, services.repo.members().get(group.id, []))


def create_group(services: Services, actor: User, name: str) -> dict[str, Any]:
    with audited(services, actor, GROUP_CREATE, detail={"group": name}):
        ensure_admin(actor, "create groups")
        if not NAME_PATTERN.match(name):
            raise errors.BadRequest(
                f"'{name}' is not a valid group name: use 1 to 63 lower-case letters, digits, "
                "'.', '_' or '-', starting with a letter or digit, such as data-science."
            )
        if services.repo.find_group(name) is not None:
            raise errors.Conflict(f"There is a group '{name}' already.")
        group = services.repo.create_group(name)
    return group_view(services, group, [])


def delete_group(services: Services, actor: User, name: str) -> None:
    """The group goes, with its members' roles through it on every model."""
    with audited(services, actor, GROUP_DELETE, detail={"group": name}):
        ensure_admin(actor, "delete groups")
        services.repo.delete_group(find_group(services, name).id)


def add_member(services: Services, actor: User, name: str, username: str) -> dict[str, Any]:
    with audited(services, actor, GROUP_MEMBER_ADD, detail={"group": name, "user": username}):
        ensure_admin(actor, "change groups")
        group = find_group(services, name)
        user = find_user(services, username)
        if not services.repo.add_member(group.id, user.id):
            raise errors.Conflict(f"'{username}' is in the group '{name}' already.")
    return show_group(services, name)


def remove_member(services: Services, actor: User, name: str, username: str) -> None:
    with audited(services, actor, GROUP_MEMBER_REMOVE, detail={"group": name, "user": username}):
        ensure_admin(actor, "change groups")
        group = find_group(services, name)
        user = find_user(services, username)
        if not services.repo.remove_member(group.id, user.id):
            raise errors.NotFound(f"'{username}' is not in the group '{name}'.")


# --------------------------------------------------------------------------- roles on models


def group_roles(services: Services, model: Model) -> list[dict[str, Any]]:
    """The groups with a role on ``model``, by name."""
    roles = services.repo.group_roles(model.id)
    names = {g.id: g.name for g in services.repo.list_groups()}
    return sorted(
        ({"group": names.get(gid, gid), "role": role} for gid, role in roles.items()),
        key=lambda entry: entry["group"],
    )


def set_group_role(
    services: Services, actor: User, model: str, name: str, role: str
) -> list[dict[str, Any]]:
    """Give the group ``name`` a role on ``model`` (or change it); the answer lists the groups
    with a role on it."""
    found = authorize_action(services, actor, model, GROUP_ROLE_SET)
    with audited(
        services, actor, GROUP_ROLE_SET, model=found, detail={"group": name, "role": role}
    ):
        if role not in ROLES or role == "owner":
            raise errors.BadRequest(
                "A group's role is viewer or editor; a model has one owner, a user."
            )
        services.repo.set_group_role(found.id, find_group(services, name).id, role)
    return group_roles(services, found)


def remove_group_role(services: Services, actor: User, model: str, name: str) -> None:
    found = authorize_action(services, actor, model, GROUP_ROLE_REMOVE)
    with audited(services, actor, GROUP_ROLE_REMOVE, model=found, detail={"group": name}):
        if not services.repo.remove_group_role(found.id, find_group(services, name).id):
            raise errors.NotFound(f"The group '{name}' has no role on '{found.name}'.")
