"""Audit events: every management action, once, with its name in the audit log and the
permission it needs; and :func:`write`, the one writer of an event.

The operations name their action by the constants below; nothing else in the code base writes
an action's name. ``permission`` is the action in :data:`modelhost.permissions.PERMISSIONS`
that a user needs on the model; ``None`` for an action that is not on a model's roles, which
its operation checks otherwise (server admins, a server setting, the environment's creator,
a signed-in user's own keys, or the gateway's token check for ``invoke``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Action:
    """A management action as the audit log names it, and the model permission it needs."""

    name: str
    permission: str | None


# models and versions
MODEL_CREATE = Action("model-create", None)  # setting model_creators
SETTINGS_CHANGE = Action("settings-change", "manage-settings")
PUBLISH = Action("publish", "publish")
DEPLOY = Action("deploy", "deploy")
ROLLBACK = Action("rollback", "deploy")
PROMOTE = Action("promote", "deploy")
LABEL_SET = Action("label-set", "deploy")
LABEL_DELETE = Action("label-delete", "deploy")
STOP = Action("stop", "deploy")
START = Action("start", "deploy")
RESTART = Action("restart", "deploy")
UNPUBLISH = Action("unpublish", "unpublish")
DELETE = Action("delete", "delete")
ENV_SET = Action("env-set", "manage-env")
ENV_UNSET = Action("env-unset", "manage-env")
# prediction capture: turned on or off (besides the settings-change), and each export
CAPTURE_ON = Action("capture-on", "manage-settings")
CAPTURE_OFF = Action("capture-off", "manage-settings")
CAPTURE_EXPORT = Action("capture-export", "read-captures")
# sharing
TOKEN_CREATE = Action("token-create", "manage-tokens")
TOKEN_REVOKE = Action("token-revoke", "manage-tokens")
TOKEN_REGENERATE = Action("token-regenerate", "manage-tokens")
TOKEN_UPDATE = Action("token-update", "manage-tokens")  # its rate or quota
COLLABORATOR_SET = Action("collaborator-set", "manage-collaborators")
COLLABORATOR_REMOVE = Action("collaborator-remove", "manage-collaborators")
ACCESS_CHANGE = Action("access-change", "change-access")
GROUP_ROLE_SET = Action("group-role-set", "manage-collaborators")  # a group's role on a model
GROUP_ROLE_REMOVE = Action("group-role-remove", "manage-collaborators")
TRANSFER = Action("transfer", "transfer")
# runs and schedules
RUN = Action("run", "run")
RUN_CANCEL = Action("run-cancel", "run")
SCHEDULE = Action("schedule", "schedule")  # a refused schedule on a model, before it exists
SCHEDULE_CREATE = Action("schedule-create", "schedule")
SCHEDULE_UPDATE = Action("schedule-update", "schedule")
SCHEDULE_PAUSE = Action("schedule-pause", "schedule")
SCHEDULE_RESUME = Action("schedule-resume", "schedule")
SCHEDULE_DELETE = Action("schedule-delete", "schedule")
SCHEDULE_TAKE_OVER = Action("schedule-take-over", "schedule")
SCHEDULE_DENIED = Action("schedule-denied", None)  # a tick refused to its creator
# server: users, keys, environments, sign-in, denied calls
USER_ADD = Action("user-add", None)  # admins
USER_DISABLE = Action("user-disable", None)  # admins
GROUP_CREATE = Action("group-create", None)  # admins
GROUP_DELETE = Action("group-delete", None)  # admins
GROUP_MEMBER_ADD = Action("group-member-add", None)  # admins
GROUP_MEMBER_REMOVE = Action("group-member-remove", None)  # admins
KEY_CREATE = Action("key-create", None)  # one's own
KEY_REVOKE = Action("key-revoke", None)  # one's own
ENVIRONMENT_CREATE = Action("environment-create", None)  # any user; revisions: the creator
ENVIRONMENTS_PRUNE = Action("environments-prune", None)  # admins
LOGIN = Action("login", None)
LOGOUT = Action("logout", None)
INVOKE = Action("invoke", None)  # a call the gateway refused
TEST_CALL = Action("test-call", "test")  # a call from the tester, through a session or key

#: name -> action, for every action above
ACTIONS: dict[str, Action] = {
    value.name: value for value in dict(globals()).values() if isinstance(value, Action)
}


class AuditLog(Protocol):
    """Where events go: :class:`modelhost.db.repo.Repo`."""

    def add_audit(self, **values: Any) -> None: ...


def write(log: AuditLog, action: Action, **values: Any) -> None:
    """Append one event for ``action``: actor_id, actor, model_id, model, version, source_ip,
    outcome, request_id and detail (JSON text). Every event is written through here."""
    log.add_audit(action=action.name, **values)
