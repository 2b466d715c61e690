"""The permission table, checked against an oracle written out here by hand from
docs/permissions.md, never computed from the production table: a change of who may do what
must change this file, the docs and the code together."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelhost import errors
from modelhost.db.access import User
from modelhost.db.repo import Model
from modelhost.permissions import (
    PERMISSIONS,
    allowed,
    ensure_admin,
    ensure_environment_permission,
    ensure_permission,
    ensure_server_permission,
    highest,
    role_of,
)

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


PUBLIC_MODEL = dataclasses.replace(MODEL, name="m", visibility="public")


@pytest.mark.parametrize("action", sorted(LEAST_ROLE))
def test_a_signed_in_user_with_no_role_on_a_public_model_may_only_view_and_test_it(
    action: str,
) -> None:
    # docs/permissions.md: anything but view and test is a 403 naming the role to ask for.
    user = _user("passer-by")
    if action in ("view", "test"):
        ensure_permission(user, action, PUBLIC_MODEL, None)
        return
    with pytest.raises(errors.Forbidden) as refused:
        ensure_permission(user, action, PUBLIC_MODEL, None)
    assert refused.value.message == (
        f"You can view the public model 'm' but not {action} it; ask its owner to add you as "
        f"{LEAST_ROLE[action]}."
    )


def test_a_refusal_names_the_role_held_and_the_role_needed() -> None:
    # docs/api.md's audit example: "Your role on 'wine-quality' is editor; change-access needs
    # owner or higher. Ask the model's owner."
    model = dataclasses.replace(MODEL, name="wine-quality")
    with pytest.raises(errors.Forbidden) as refused:
        ensure_permission(_user("alice"), "change-access", model, "editor")
    assert refused.value.message == (
        "Your role on 'wine-quality' is editor; change-access needs owner or higher. Ask the "
        "model's owner."
    )


def test_a_private_model_is_not_found_for_a_stranger_in_the_words_of_a_missing_one() -> None:
    with pytest.raises(errors.ModelNotFound) as refused:
        ensure_permission(_user("stranger"), "view", dataclasses.replace(MODEL, name="m"), None)
    assert (
        refused.value.message == "There is no model 'm'. 'modelhost models list' shows the models."
    )


# The server-level tables (docs/permissions.md, "Who may run code on the server" and "Named
# environments"), with the refusals as the docs word them.
RUN_REFUSAL = (
    "Runs and schedules that publish to no model may run any command on the server, so only "
    "server admins may start them here (setting code_runners). Give --publish-model MODEL for a "
    "model you are an editor of, or ask an admin."
)
CREATE_REFUSAL = (
    "Only server admins may create models on this server (setting model_creators). Ask an "
    "admin to create it and add you as an editor, then publish to it."
)


@pytest.mark.parametrize(
    ("action", "setting", "refusal"),
    [
        ("run-unattached", "code_runners", RUN_REFUSAL),
        ("create-model", "model_creators", CREATE_REFUSAL),
    ],
)
def test_a_server_action_is_for_admins_unless_its_setting_says_users(
    action: str, setting: str, refusal: str
) -> None:
    admins_only = SimpleNamespace(**{setting: "admins"})
    everyone = SimpleNamespace(**{setting: "users"})
    ensure_server_permission(_user("root", admin=True), action, admins_only)  # type: ignore[arg-type]
    ensure_server_permission(_user("u"), action, everyone)  # type: ignore[arg-type]
    with pytest.raises(errors.Forbidden) as refused:
        ensure_server_permission(_user("u"), action, admins_only)  # type: ignore[arg-type]
    assert refused.value.message == refusal


def test_named_environments_follow_their_own_table() -> None:
    user, other, admin = _user("u"), _user("other"), _user("root", admin=True)
    for action in ("view-environments", "create-environment"):
        ensure_environment_permission(user, action)
    ensure_environment_permission(user, "revise-environment", "six-env", creator_id="u")
    ensure_environment_permission(admin, "revise-environment", "six-env", creator_id="other")
    with pytest.raises(errors.Forbidden) as refused:
        ensure_environment_permission(other, "revise-environment", "six-env", creator_id="u")
    assert refused.value.message == (
        "The environment 'six-env' was created by another user; only they or a server admin can "
        "revise it. Create your own under another name."
    )
    ensure_environment_permission(admin, "prune-environments")
    with pytest.raises(errors.Forbidden) as pruning:
        ensure_environment_permission(user, "prune-environments")
    assert pruning.value.message == "Only server admins can prune environments."


def test_admin_only_routes_say_so() -> None:
    ensure_admin(_user("root", admin=True), "add users")
    with pytest.raises(errors.Forbidden) as refused:
        ensure_admin(_user("u"), "add users")
    assert refused.value.message == "Only server admins can add users."


@pytest.mark.parametrize(
    ("roles", "held"),
    [
        ((), None),
        ((None, None), None),
        (("viewer", None), "viewer"),
        ((None, "editor"), "editor"),
        (("viewer", "editor"), "editor"),
        (("editor", "viewer"), "editor"),
        (("owner", "editor", "viewer"), "owner"),
    ],
)
def test_a_role_is_the_highest_of_ones_own_and_ones_groups(
    roles: tuple[str | None, ...], held: str | None
) -> None:
    assert highest(*roles) == held


def test_the_owner_holds_owner_and_others_what_the_collaborators_give_them() -> None:
    owner = _user("somebody")  # MODEL is owned by "somebody"
    assert role_of(owner, MODEL, {"somebody": "viewer"}) == "owner"
    assert role_of(_user("ed"), MODEL, {"ed": "editor", "vi": "viewer"}) == "editor"
    assert role_of(_user("nobody"), MODEL, {"ed": "editor"}) is None


def test_allowed_says_whether_the_check_would_pass() -> None:
    assert allowed(_user("ed"), "deploy", MODEL, "editor") is True
    assert allowed(_user("vi"), "deploy", MODEL, "viewer") is False
    assert allowed(_user("stranger"), "view", MODEL, None) is False
