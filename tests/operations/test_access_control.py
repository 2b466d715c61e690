"""The access-control operations in process, on SQLite: the one authorize check and its audit
records, roles through groups, users and passwords, the sign-in throttle, API keys, access
tokens and sharing. Refusals are checked for what they tell the user (docs/permissions.md,
docs/api.md); the HTTP matrices (tests/api/test_permissions.py) cover the routes."""

from __future__ import annotations

import pytest

from modelhost import errors
from modelhost.events import DEPLOY
from modelhost.operations import access_control as ac
from tests.operations.conftest import World


def test_a_missing_model_is_named_and_the_attempt_recorded(world: World) -> None:
    with pytest.raises(errors.ModelNotFound) as missing:
        ac.authorize_action(world.services, world.owner, "nope", DEPLOY)
    assert (
        missing.value.message
        == "There is no model 'nope'. 'modelhost models list' shows the models."
    )
    [event] = world.events("deploy")
    assert (event["actor"], event["model"], event["outcome"]) == ("olivia", "nope", "failed")
    assert event["detail"] == {"error": "no such model"}


def test_a_refusal_is_recorded_with_its_message_and_the_permission_needed(world: World) -> None:
    with pytest.raises(errors.Forbidden) as refused:
        ac.authorize_action(world.services, world.viewer, "wine", DEPLOY)
    assert refused.value.message == (
        "Your role on 'wine' is viewer; deploy needs editor or higher. Ask the model's owner."
    )
    [event] = world.events("deploy")
    assert (event["actor"], event["model"], event["outcome"]) == ("vera", "wine", "denied")
    assert event["detail"] == {"error": refused.value.message, "needs": "deploy"}


def test_a_check_without_an_audit_action_records_nothing(world: World) -> None:
    with pytest.raises(errors.ModelNotFound):
        ac.authorize(world.services, world.owner, "nope", "view")
    with pytest.raises(errors.Forbidden):
        ac.authorize(world.services, world.viewer, "wine", "deploy")
    assert world.events("deploy") == []
    assert world.events("view") == []
    assert ac.authorize(world.services, world.editor, "wine", "deploy").id == world.model.id


def test_a_role_through_a_group_counts_and_the_highest_role_wins(world: World) -> None:
    repo = world.services.repo
    builders = repo.create_group("builders")
    repo.add_member(builders.id, world.viewer.id)
    repo.set_group_role(world.model.id, builders.id, "editor")
    outsider = repo.create_user("gina", is_admin=False)
    readers = repo.create_group("readers")
    repo.add_member(readers.id, outsider.id)
    repo.add_member(readers.id, world.editor.id)
    repo.set_group_role(world.model.id, readers.id, "viewer")
    assert ac.roles_on(world.services, world.model) == {
        world.editor.id: "editor",  # their own editor beats the group's viewer
        world.viewer.id: "editor",  # the group's editor beats their own viewer
        outsider.id: "viewer",  # only through the group
    }
    assert ac.roles_of(world.services, world.viewer) == {world.model.id: "editor"}
    assert ac.roles_of(world.services, world.editor) == {world.model.id: "editor"}
    assert ac.roles_of(world.services, outsider) == {world.model.id: "viewer"}
    ac.authorize(world.services, world.viewer, "wine", "deploy")


def test_visible_models_are_those_owned_shared_or_public(world: World) -> None:
    repo = world.services.repo
    mine = repo.create_model(
        "mine", owner_id=world.viewer.id, description="", instance_count=1, invocation_mode="token"
    )
    open_ = repo.create_model(
        "open", owner_id=world.owner.id, description="", instance_count=1, invocation_mode="token"
    )
    repo.update_model(open_.id, visibility="public")
    repo.create_model(
        "hidden", owner_id=world.owner.id, description="", instance_count=1, invocation_mode="token"
    )
    names = sorted(m.name for m in ac.visible_models(world.services, world.viewer))
    assert names == sorted([mine.name, "open", "wine"])


def test_a_user_is_shown_with_whether_they_are_disabled(world: World) -> None:
    view = ac.user_view(world.owner)
    assert view["username"] == "olivia"
    assert view["id"] == world.owner.id
    assert view["is_admin"] is False
    assert view["disabled"] is False
    assert view["created_at"].endswith("Z")


@pytest.fixture
def admin(world: World):  # type: ignore[no-untyped-def]
    return world.services.repo.create_user("root", is_admin=True)


@pytest.mark.parametrize("name", ["ab", "a" * 63, "a.b_c-d", "0x"])
def test_user_names_of_2_to_63_lowercase_letters_digits_and_dots_are_accepted(
    world: World, admin: object, name: str
) -> None:
    user = ac.add_user(world.services, admin, name, "a-long-password", is_admin=False)  # type: ignore[arg-type]
    assert user.username == name


@pytest.mark.parametrize("name", ["a", "a" * 64, "Alice", "-a", "a b", ""])
def test_other_user_names_are_refused_saying_what_a_name_may_hold(
    world: World, admin: object, name: str
) -> None:
    with pytest.raises(errors.BadRequest) as refused:
        ac.add_user(world.services, admin, name, "a-long-password", is_admin=False)  # type: ignore[arg-type]
    assert refused.value.message == (
        f"'{name}' is not a valid user name: 2 to 63 lowercase letters, digits, '.', '_' or '-'."
    )


def test_a_password_needs_ten_characters(world: World, admin: object) -> None:
    with pytest.raises(errors.BadRequest) as refused:
        ac.add_user(world.services, admin, "short", "123456789", is_admin=False)  # type: ignore[arg-type]
    assert refused.value.message == "Passwords need at least 10 characters."
    ac.add_user(world.services, admin, "long", "1234567890", is_admin=True)  # type: ignore[arg-type]
    assert world.services.repo.find_user("long").is_admin  # type: ignore[union-attr]


def test_adding_a_user_is_for_admins_and_names_are_unique(world: World, admin: object) -> None:
    with pytest.raises(errors.Forbidden, match=r"Only server admins can add users\."):
        ac.add_user(world.services, world.owner, "newbie", "a-long-password", is_admin=False)
    with pytest.raises(errors.Conflict) as taken:
        ac.add_user(world.services, admin, "olivia", "a-long-password", is_admin=False)  # type: ignore[arg-type]
    assert taken.value.message == "There is already a user named 'olivia'."


def test_disabling_is_for_admins_not_of_oneself_and_of_someone_who_exists(
    world: World, admin: object
) -> None:
    with pytest.raises(errors.Forbidden, match=r"Only server admins can disable users\."):
        ac.disable_user(world.services, world.owner, "vera")
    with pytest.raises(errors.BadRequest) as self_:
        ac.disable_user(world.services, admin, "root")  # type: ignore[arg-type]
    assert self_.value.message == "You cannot disable your own account."
    with pytest.raises(errors.NotFound) as missing:
        ac.disable_user(world.services, admin, "ghost")  # type: ignore[arg-type]
    assert missing.value.message == "There is no user 'ghost'. 'modelhost users list' shows them."
    assert ac.disable_user(world.services, admin, "vera").id == world.viewer.id  # type: ignore[arg-type]
    assert world.services.repo.find_user("vera").disabled_at is not None  # type: ignore[union-attr]


def test_the_throttle_refuses_past_its_limit_within_its_window_only() -> None:
    now = [100.0]
    throttle = ac.Throttle(clock=lambda: now[0])  # the documented 5 failures a minute
    for _ in range(4):
        throttle.failed("k")
    throttle.check("k", "to sign in as u from 1.2.3.4")
    throttle.failed("k")
    with pytest.raises(errors.TooManyRequests) as refused:
        throttle.check("k", "to sign in as u from 1.2.3.4")
    assert refused.value.message == (
        "Too many failed attempts to sign in as u from 1.2.3.4; wait 60 s and try again."
    )
    assert refused.value.headers == {"Retry-After": "60"}
    throttle.check("other", "x")  # another key is not affected
    now[0] += 59.5
    with pytest.raises(errors.TooManyRequests):
        throttle.check("k", "x")
    now[0] += 0.5  # the failures are now exactly 60 s old: out of the window
    throttle.check("k", "x")


def test_signing_in_checks_the_password_records_each_try_and_throttles_per_name_and_address(
    world: World, admin: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ac, "LOGIN_THROTTLE", ac.Throttle(limit=2))
    ac.add_user(world.services, admin, "dora", "a-long-password", is_admin=False)  # type: ignore[arg-type]
    key = ac.login(world.services, "dora", "a-long-password", "10.0.0.1", "laptop")
    assert key.startswith("mh_")
    with pytest.raises(errors.Unauthenticated) as wrong:
        ac.login(world.services, "dora", "wrong-password", "10.0.0.1", "laptop")
    assert wrong.value.message == "The user name or password is wrong."
    with pytest.raises(errors.Unauthenticated):
        ac.login(world.services, " DORA ", "wrong-password", "10.0.0.1", "laptop")
    with pytest.raises(errors.TooManyRequests, match=r"to sign in as dora from 10\.0\.0\.1"):
        ac.login(world.services, "dora", "a-long-password", "10.0.0.1", "laptop")
    ac.login(world.services, "dora", "a-long-password", "10.0.0.2", "laptop")  # elsewhere
    outcomes = [(e["actor"], e["outcome"]) for e in world.events("login")]
    assert outcomes == [
        ("dora", "success"),
        (" DORA ", "denied"),
        ("dora", "denied"),
        ("dora", "success"),
    ]


def test_a_disabled_user_or_one_without_a_password_cannot_sign_in(
    world: World, admin: object
) -> None:
    ac.add_user(world.services, admin, "dora", "a-long-password", is_admin=False)  # type: ignore[arg-type]
    ac.disable_user(world.services, admin, "dora")  # type: ignore[arg-type]
    for name, password in (("dora", "a-long-password"), ("olivia", ""), ("ghost", "x" * 12)):
        with pytest.raises(errors.Unauthenticated, match="user name or password is wrong"):
            ac.login(world.services, name, password, "10.9.9.9", "laptop")


def test_a_key_signs_in_for_a_new_expiring_key_and_a_bad_one_is_throttled(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ac, "LOGIN_THROTTLE", ac.Throttle(limit=1))
    key = ac.create_api_key(world.services, world.owner, "cli")
    session = ac.login_with_key(world.services, key, "10.0.0.1", "web session", expires_in_days=1)
    [listed] = [
        k for k in ac.list_api_keys(world.services, world.owner) if k["name"] == "web session"
    ]
    assert listed["expires_at"] is not None
    assert listed["revoked"] is False
    assert session.startswith("mh_")
    with pytest.raises(errors.Unauthenticated):
        ac.login_with_key(world.services, "mh_wrong", "10.0.0.1", "s", expires_in_days=1)
    with pytest.raises(
        errors.TooManyRequests, match=r"to sign in with an API key from 10\.0\.0\.1"
    ):
        ac.login_with_key(world.services, key, "10.0.0.1", "s", expires_in_days=1)
    outcomes = [(e["actor"], e["outcome"], e["detail"]) for e in world.events("login")]
    assert outcomes == [("(API key)", "denied", {}), ("olivia", "success", {"with": "api key"})]
    ac.logout(world.services, world.owner, session)
    assert [e["actor"] for e in world.events("logout")] == ["olivia"]
    [after] = [
        k for k in ac.list_api_keys(world.services, world.owner) if k["name"] == "web session"
    ]
    assert after["revoked"] is True


def test_api_keys_are_listed_with_their_prefix_and_revoked_only_by_their_owner(
    world: World,
) -> None:
    key = ac.create_api_key(world.services, world.owner, "ci", expires_in_days=30)
    [listed] = ac.list_api_keys(world.services, world.owner)
    assert listed["name"] == "ci"
    assert key.startswith(listed["prefix"])
    assert listed["expires_at"] is not None
    assert listed["created_at"].endswith("Z")
    with pytest.raises(errors.NotFound) as refused:
        ac.revoke_api_key(world.services, world.editor, listed["id"])
    assert refused.value.message == f"You have no active API key with id '{listed['id']}'."
    ac.revoke_api_key(world.services, world.owner, listed["id"])
    assert ac.list_api_keys(world.services, world.owner)[0]["revoked"] is True
    ac.create_api_key(world.services, world.owner, "forever")
    assert ac.list_api_keys(world.services, world.owner)[1]["expires_at"] is None


def test_an_access_token_is_shown_once_and_found_by_id_or_unique_name(world: World) -> None:
    made = ac.create_token(world.services, world.owner, world.model, "  billing  ")
    assert made["name"] == "billing"
    assert made["token"].startswith("mht_")
    assert made["prefix"] == made["token"][:8]
    assert made["revoked"] is False
    assert (
        ac.hash_token(made["token"])
        == world.services.repo.list_tokens(world.model.id)[0].token_hash
    )
    assert "token" not in ac.list_tokens(world.services, world.model)[0]
    assert ac.find_token(world.services, world.model, made["id"]).name == "billing"
    assert ac.find_token(world.services, world.model, "billing").id == made["id"]
    twin = ac.create_token(world.services, world.owner, world.model, "billing")
    with pytest.raises(errors.BadRequest) as ambiguous:
        ac.find_token(world.services, world.model, "billing")
    assert ambiguous.value.message == (
        f"Model 'wine' has 2 active tokens named 'billing'; give the id of one "
        f"({made['id']}, {twin['id']}). 'modelhost tokens list wine' shows them."
    )
    with pytest.raises(errors.NotFound) as missing:
        ac.find_token(world.services, world.model, "nobody")
    assert missing.value.message == (
        "Model 'wine' has no active token with the id or name 'nobody'. 'modelhost tokens list "
        "wine' shows them."
    )


@pytest.mark.parametrize("name", ["", "   ", "x" * 129])
def test_a_token_needs_a_name_of_1_to_128_characters(world: World, name: str) -> None:
    with pytest.raises(errors.BadRequest) as refused:
        ac.create_token(world.services, world.owner, world.model, name)
    assert refused.value.message == "Give the token a name saying who it is for (1-128 characters)."


def test_a_name_of_128_characters_is_fine(world: World) -> None:
    assert ac.create_token(world.services, world.owner, world.model, "x" * 128)["name"] == "x" * 128


def test_revoking_and_regenerating_a_token(world: World) -> None:
    made = ac.create_token(world.services, world.owner, world.model, "billing")
    fresh = ac.regenerate_token(world.services, world.model, "billing")
    assert fresh["id"] == made["id"]
    assert fresh["name"] == "billing"
    assert fresh["token"] != made["token"]
    assert fresh["token"].startswith("mht_")
    assert fresh["prefix"] == fresh["token"][:8]
    [stored] = world.services.repo.list_tokens(world.model.id)
    assert stored.token_hash == ac.hash_token(fresh["token"])
    assert ac.revoke_token(world.services, world.model, made["id"]).id == made["id"]
    assert ac.list_tokens(world.services, world.model)[0]["revoked"] is True
    with pytest.raises(errors.NotFound):
        ac.revoke_token(world.services, world.model, made["id"])


def test_access_takes_visibility_and_invocation_and_says_what_is_wrong(world: World) -> None:
    changed = ac.set_access(world.services, world.model, visibility="public", invocation="public")
    assert (changed.visibility, changed.invocation_mode) == ("public", "public")
    changed = ac.set_access(world.services, world.model, visibility="private", invocation=None)
    assert (changed.visibility, changed.invocation_mode) == ("private", "public")
    changed = ac.set_access(world.services, world.model, visibility=None, invocation="token")
    assert (changed.visibility, changed.invocation_mode) == ("private", "token")
    for kwargs, message in (
        ({"visibility": "open", "invocation": None}, "Visibility is public or private."),
        ({"visibility": None, "invocation": "open"}, "Invocation is public (no token) or token."),
        (
            {"visibility": None, "invocation": None},
            "Say what to change: visibility and/or invocation.",
        ),
    ):
        with pytest.raises(errors.BadRequest) as refused:
            ac.set_access(world.services, world.model, **kwargs)  # type: ignore[arg-type]
        assert refused.value.message == message


def test_collaborators_are_listed_owner_first_and_set_and_removed_by_name(world: World) -> None:
    people = ac.collaborators(world.services, world.model)
    assert people[0] == {"user": "olivia", "role": "owner"}
    assert sorted(p["user"] for p in people[1:]) == ["eddie", "vera"]
    ac.set_collaborator(world.services, world.model, "vera", "editor")
    assert {"user": "vera", "role": "editor"} in ac.collaborators(world.services, world.model)
    for role in ("owner", "admin"):
        with pytest.raises(errors.BadRequest) as refused:
            ac.set_collaborator(world.services, world.model, "vera", role)
        assert refused.value.message == (
            "A collaborator's role is viewer or editor; ownership moves with 'transfer'."
        )
    with pytest.raises(errors.BadRequest) as owner:
        ac.set_collaborator(world.services, world.model, "olivia", "viewer")
    assert owner.value.message == "'olivia' owns 'wine' already."
    ac.remove_collaborator(world.services, world.model, "vera")
    with pytest.raises(errors.NotFound) as gone:
        ac.remove_collaborator(world.services, world.model, "vera")
    assert gone.value.message == "'vera' is not a collaborator on 'wine'."


def test_a_transfer_makes_the_previous_owner_an_editor(world: World, admin: object) -> None:
    moved = ac.transfer(world.services, world.model, "vera")
    assert moved.owner_id == world.viewer.id
    roles = {p["user"]: p["role"] for p in ac.collaborators(world.services, moved)}
    assert roles == {"vera": "owner", "olivia": "editor", "eddie": "editor"}
    with pytest.raises(errors.BadRequest) as already:
        ac.transfer(world.services, moved, "vera")
    assert already.value.message == "'vera' owns 'wine' already."
    ac.disable_user(world.services, admin, "eddie")  # type: ignore[arg-type]
    with pytest.raises(errors.BadRequest) as disabled:
        ac.transfer(world.services, moved, "eddie")
    assert disabled.value.message == "'eddie' is disabled and cannot own models."


def test_tokens_belong_to_their_model_and_a_revoked_one_is_not_found_again(world: World) -> None:
    repo = world.services.repo
    other = repo.create_model(
        "beer", owner_id=world.owner.id, description="", instance_count=1, invocation_mode="token"
    )
    theirs = ac.create_token(world.services, world.owner, other, "billing")
    ours = ac.create_token(world.services, world.owner, world.model, "billing")
    assert [t["id"] for t in ac.list_tokens(world.services, world.model)] == [ours["id"]]
    assert ac.find_token(world.services, world.model, "billing").id == ours["id"]
    with pytest.raises(errors.NotFound, match="has no active token with the id or name"):
        ac.find_token(world.services, world.model, theirs["id"])
    ac.revoke_token(world.services, world.model, "billing")
    for key in ("billing", ours["id"]):
        with pytest.raises(errors.NotFound) as refused:
            ac.revoke_token(world.services, world.model, key)
        assert refused.value.message == (
            f"Token '{key}' of model 'wine' was revoked; a revoked token cannot be used or "
            "changed again. 'modelhost tokens create wine --name NAME' makes a new one."
        )
    # docs/api.md: the secret is mht_ and 43 characters (32 random bytes, URL-safe base64)
    assert len(theirs["token"]) == len("mht_G5qmKqMyjt0fxMNRdg78mEk3uuTx52jANsw2lEOUIjs")
    assert ac.list_tokens(world.services, other)[0]["created_at"].endswith("Z")


def test_a_regenerated_token_is_dated_by_its_regeneration(world: World) -> None:
    made = ac.create_token(world.services, world.owner, world.model, "billing")
    fresh = ac.regenerate_token(world.services, world.model, made["id"])
    assert fresh["created_at"] > made["created_at"]


def test_keys_made_at_sign_in_expire_when_asked_and_in_the_future(
    world: World, admin: object
) -> None:
    ac.add_user(world.services, admin, "dora", "a-long-password", is_admin=False)  # type: ignore[arg-type]
    dora = world.services.repo.find_user("dora")
    ac.login(world.services, "dora", "a-long-password", "10.0.0.9", "day", expires_in_days=1)
    [day] = ac.list_api_keys(world.services, dora)  # type: ignore[arg-type]
    assert day["expires_at"] is not None
    assert day["expires_at"] > day["created_at"]


def test_a_bad_key_at_sign_in_throttles_only_its_own_address(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ac, "LOGIN_THROTTLE", ac.Throttle(limit=1))
    key = ac.create_api_key(world.services, world.owner, "cli")
    with pytest.raises(errors.Unauthenticated):
        ac.login_with_key(world.services, "mh_wrong", "10.0.0.1", "s", expires_in_days=1)
    ac.login_with_key(world.services, key, "10.0.0.2", "s", expires_in_days=1)
