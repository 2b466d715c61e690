"""The permission table, checked against an oracle written out here by hand from
docs/permissions.md, never computed from the production table: a change of who may do what
must change this file, the docs and the code together."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelhost import errors
from modelhost.db.access import User
from modelhost.db.repo import Model
from modelhost.permissions import PERMISSIONS, ensure_permission

#: Roles on a model, lowest first, as docs/permissions.md introduces them.
ROLE_ORDER = ["viewer", "editor", "owner"]

#: Each action on a model and the least role that may do it (docs/permissions.md, "Roles").
LEAST_ROLE = {
    "view": "viewer",
    "view-config": "viewer",
    "view-logs": "viewer",
    "view-audit": "viewer",
    "test": "viewer",
    "publish": "editor",
    "run": "editor",
    "schedule": "editor",
    "deploy": "editor",
    "manage-settings": "editor",
    "read-captures": "editor",
    "manage-env": "editor",
    "manage-tokens": "editor",
    "take-over-schedule": "owner",
    "manage-collaborators": "owner",
    "change-access": "owner",
    "transfer": "owner",
    "unpublish": "owner",
    "delete": "owner",
}

DOCS = Path(__file__).parent.parent / "docs" / "permissions.md"


def test_the_code_gives_each_action_the_least_role_the_docs_give_it() -> None:
    assert PERMISSIONS == LEAST_ROLE


def test_the_documented_table_says_the_same_as_this_oracle() -> None:
    row = r"^\| `([a-z-]+)` \|\s*(yes)?\s*\|\s*(yes)?\s*\|\s*(yes)?\s*\|"
    rows = re.findall(row, DOCS.read_text(), re.MULTILINE)
    documented = {}
    for action, viewer, editor, owner in rows:
        marks = zip(ROLE_ORDER, (viewer, editor, owner), strict=True)
        allowed = [role for role, yes in marks if yes]
        # each row allows a role and every role above it
        assert allowed == ROLE_ORDER[ROLE_ORDER.index(allowed[0]) :], action
        documented[action] = allowed[0]
    assert documented == LEAST_ROLE


def _user(name: str, admin: bool = False) -> User:
    return User(id=name, username=name, is_admin=admin, created_at=None)  # type: ignore[arg-type]


MODEL = Model(  # a private model owned by someone else
    id="m",
    name="m",
    description="",
    owner_id="somebody",
    instance_count=1,
    timeout_seconds=None,
    created_at=None,  # type: ignore[arg-type]
    updated_at=None,  # type: ignore[arg-type]
)


@pytest.mark.parametrize("action", sorted(LEAST_ROLE))
@pytest.mark.parametrize("role", ROLE_ORDER)
def test_a_collaborator_may_do_exactly_what_their_role_reaches(action: str, role: str) -> None:
    user = _user("collaborator")
    if ROLE_ORDER.index(role) >= ROLE_ORDER.index(LEAST_ROLE[action]):
        ensure_permission(user, action, MODEL, role)
    else:
        with pytest.raises(errors.Forbidden):
            ensure_permission(user, action, MODEL, role)


@pytest.mark.parametrize("action", sorted(LEAST_ROLE))
def test_a_stranger_to_a_private_model_is_told_it_does_not_exist(action: str) -> None:
    with pytest.raises(errors.NotFound):
        ensure_permission(_user("stranger"), action, MODEL, None)


@pytest.mark.parametrize("action", sorted(LEAST_ROLE))
def test_an_admin_may_do_everything(action: str) -> None:
    ensure_permission(_user("root", admin=True), action, MODEL, None)
