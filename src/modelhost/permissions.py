"""Who may do what to a model: actions x roles as data, checked in one function.

Roles on a model rank viewer < editor < owner; server admins may do everything. A model the
user may not see answers 404 (not 403), so private models stay undiscoverable.
"""

from __future__ import annotations

from modelhost import errors
from modelhost.db.repo import Model, User
from modelhost.settings import Settings

ROLES = ("viewer", "editor", "owner")
_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}

#: action -> the least role that may do it
PERMISSIONS: dict[str, str] = {
    "view": "viewer",  # the model, its versions, instances and labels
    "view-config": "viewer",  # its environment variables (secret values are never shown)
    "view-logs": "viewer",
    "view-audit": "viewer",
    "test": "viewer",  # call it from the tester, without an access token
    "publish": "editor",
    "run": "editor",  # start and cancel runs that publish to the model
    "schedule": "editor",  # create, pause, resume and delete schedules that publish to it
    "take-over-schedule": "owner",  # make a collaborator's schedule act as oneself
    "deploy": "editor",  # deploy, rollback, promote, labels, stop, start, restart
    "manage-settings": "editor",  # routing, instances, timeout, description, logging, capture
    "read-captures": "editor",  # export captured inputs and outputs, and drift reports of them
    "manage-env": "editor",
    "manage-tokens": "editor",
    "manage-collaborators": "owner",
    "change-access": "owner",  # visibility and invocation mode
    "transfer": "owner",
    "unpublish": "owner",
    "delete": "owner",
}


#: Server-level actions on named environments -> who may do them: any signed-in ``user``, the
#: ``creator`` of the environment (its first revision) or an admin, or ``admin`` only. Named
#: environments are shared by every model, and a version keeps the lock it was published with,
#: so a new revision changes only later publishes; pruning deletes files for the whole server.
ENVIRONMENT_PERMISSIONS: dict[str, str] = {
    "view-environments": "user",
    "create-environment": "user",
    "revise-environment": "creator",
    "prune-environments": "admin",
}


#: Server-level actions that put code on the server without a model's roles to check them ->
#: the setting that says who may do them: ``admins`` or ``users`` (every signed-in user).
SERVER_PERMISSIONS: dict[str, str] = {
    # runs and schedules that publish to no model: any command, as nobody's model
    "run-unattached": "code_runners",
    # a new model, which its creator owns (and so may publish code to)
    "create-model": "model_creators",
}

_SERVER_REFUSALS = {
    "run-unattached": (
        "Runs and schedules that publish to no model may run any command on the server, so "
        "only server admins may start them here (setting code_runners). Give --publish-model "
        "MODEL for a model you are an editor of, or ask an admin."
    ),
    "create-model": (
        "Only server admins may create models on this server (setting model_creators). Ask an "
        "admin to create it and add you as an editor, then publish to it."
    ),
}


def ensure_server_permission(user: User, action: str, settings: Settings) -> None:
    """Raise unless ``user`` may do the server-level ``action`` under ``settings``."""
    if user.is_admin or getattr(settings, SERVER_PERMISSIONS[action]) == "users":
        return
    raise errors.Forbidden(_SERVER_REFUSALS[action])


def ensure_environment_permission(
    user: User, action: str, name: str | None = None, creator_id: str | None = None
) -> None:
    """Raise unless ``user`` may do ``action`` (on the environment ``name`` made by
    ``creator_id``)."""
    required = ENVIRONMENT_PERMISSIONS[action]
    if user.is_admin or required == "user":
        return
    if required == "creator" and user.id == creator_id:
        return
    if required == "creator":
        raise errors.Forbidden(
            f"The environment '{name}' was created by another user; only they or a server "
            "admin can revise it. Create your own under another name."
        )
    raise errors.Forbidden(f"Only server admins can {action.replace('-', ' ')}.")


def highest(*roles: str | None) -> str | None:
    """The highest of ``roles`` (None for none): a user's role on a model is the highest of
    their own and their groups' roles."""
    held = [role for role in roles if role is not None]
    return max(held, key=_RANK.__getitem__) if held else None


def role_of(user: User, model: Model, collaborators: dict[str, str]) -> str | None:
    """``user``'s role on ``model``, given every user's role on it (``collaborators``: user id
    -> role, with the roles held through groups, see ``access_control.roles_on``)."""
    if model.owner_id == user.id:
        return "owner"
    return collaborators.get(user.id)


def can_see(user: User, model: Model, role: str | None) -> bool:
    return user.is_admin or role is not None or model.visibility == "public"


#: what a signed-in user who is no collaborator may do on a public model
_PUBLIC_ACTIONS = frozenset({"view", "test"})


def ensure_permission(user: User, action: str, model: Model, role: str | None) -> None:
    """Raise unless ``user`` (with ``role`` on ``model``) may do ``action``."""
    required = PERMISSIONS[action]
    if user.is_admin:
        return
    if not can_see(user, model, role):
        raise errors.ModelNotFound(
            f"There is no model '{model.name}'. 'modelhost models list' shows the models."
        )
    if role is None:  # a public model seen by a signed-in user who is not a collaborator
        if action in _PUBLIC_ACTIONS:
            return
        raise errors.Forbidden(
            f"You can view the public model '{model.name}' but not {action} it; ask its owner "
            f"to add you as {required}."
        )
    if _RANK[role] < _RANK[required]:
        raise errors.Forbidden(
            f"Your role on '{model.name}' is {role}; {action} needs {required} or higher. Ask "
            "the model's owner."
        )


def ensure_admin(user: User, what: str) -> None:
    if not user.is_admin:
        raise errors.Forbidden(f"Only server admins can {what}.")


def allowed(user: User, action: str, model: Model, role: str | None) -> bool:
    """Whether :func:`ensure_permission` would let ``user`` do ``action``; for showing buttons."""
    try:
        ensure_permission(user, action, model, role)
    except (errors.Forbidden, errors.ModelNotFound):
        return False
    return True
