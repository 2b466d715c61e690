"""Management actions on a model as operations: the permission from the action table, the
refusal audited, the event written in the action's own transaction."""

from __future__ import annotations

from typing import Any

import pytest

from modelhost import errors
from modelhost.operations import model_actions as actions
from modelhost.operations import sharing
from tests.operations.conftest import World


def test_a_viewer_who_changes_settings_is_forbidden_and_the_refusal_is_audited(
    world: World,
) -> None:
    request = actions.SettingsChange("wine", description="mine now")
    with pytest.raises(errors.Forbidden, match="manage-settings needs editor"):
        actions.change_settings(world.services, world.viewer, request)
    [event] = world.events("settings-change")
    assert (event["actor"], event["model"], event["outcome"]) == ("vera", "wine", "denied")
    assert event["detail"]["needs"] == "manage-settings"
    assert world.services.repo.find_model("wine").description == ""  # type: ignore[union-attr]


def test_an_action_on_a_model_that_does_not_exist_is_audited_as_failed_under_its_name(
    world: World,
) -> None:
    with pytest.raises(errors.ModelNotFound):
        actions.restart(world.services, world.owner, "no-such-model")
    [event] = world.events("restart")
    assert (event["model"], event["outcome"]) == ("no-such-model", "failed")
    assert event["detail"] == {"error": "no such model"}


def test_an_editor_changes_settings_and_the_event_says_what_changed(world: World) -> None:
    request = actions.SettingsChange("wine", description="red", instance_count=2)
    view = actions.change_settings(world.services, world.editor, request)
    assert (view["description"], view["instance_count"]) == ("red", 2)
    [event] = world.events("settings-change")
    assert (event["actor"], event["outcome"]) == ("eddie", "success")
    assert event["detail"] == {"description": "red", "instance_count": 2}


def test_an_action_whose_event_cannot_be_written_changes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = world.services.repo
    add_audit = repo.add_audit

    def refuse_successes(**values: Any) -> None:
        if values["outcome"] == "success":
            raise RuntimeError("the audit log is full")
        add_audit(**values)

    monkeypatch.setattr(repo, "add_audit", refuse_successes)
    request = actions.SettingsChange("wine", description="red")
    with pytest.raises(RuntimeError):
        actions.change_settings(world.services, world.owner, request)
    assert repo.find_model("wine").description == ""  # type: ignore[union-attr]
    [event] = world.events("settings-change")
    assert (event["outcome"], event["detail"]["error"]) == ("failed", "RuntimeError")


def test_an_invalid_change_is_refused_by_the_operation_and_audited_as_failed(
    world: World,
) -> None:
    request = actions.SettingsChange("wine", routing_mode="sideways")
    with pytest.raises(errors.BadRequest, match="Routing mode must be basic or advanced"):
        actions.change_settings(world.services, world.owner, request)
    [event] = world.events("settings-change")
    assert event["outcome"] == "failed"


def test_a_deploy_without_a_version_is_a_bad_request_and_writes_no_event(world: World) -> None:
    with pytest.raises(errors.BadRequest, match="Say which version to deploy"):
        actions.deploy(world.services, world.owner, actions.VersionChoice("wine"))
    assert world.events("deploy") == []


def test_an_editor_may_not_transfer_a_model_but_its_owner_may(world: World) -> None:
    with pytest.raises(errors.Forbidden):
        sharing.transfer(world.services, world.editor, "wine", "eddie")
    view = sharing.transfer(world.services, world.owner, "wine", "eddie")
    assert view["owner"] == "eddie"
    outcomes = [(e["actor"], e["outcome"]) for e in world.events("transfer")]
    assert outcomes == [("olivia", "success"), ("eddie", "denied")]  # newest first


def test_a_token_is_created_and_its_event_names_it_without_the_secret(world: World) -> None:
    created = sharing.create_token(world.services, world.editor, "wine", "billing")
    [event] = world.events("token-create")
    assert event["detail"] == {"token": created["id"], "name": "billing"}
    assert created["token"] not in str(event)


def test_an_environment_variable_set_by_a_viewer_is_refused(world: World) -> None:
    request = actions.EnvChange("wine", "API_URL", "https://example.org")
    with pytest.raises(errors.Forbidden):
        actions.set_env(world.services, world.viewer, request)
    assert actions.set_env(world.services, world.editor, request) == {
        "name": "API_URL",
        "secret": False,
    }
    assert [e["outcome"] for e in world.events("env-set")] == ["success", "denied"]


def test_an_instance_count_out_of_range_says_the_range_and_the_setting(world: World) -> None:
    limit = world.services.settings.max_instance_count
    request = actions.SettingsChange("wine", instance_count=limit + 1)
    with pytest.raises(errors.BadRequest) as refused:
        actions.change_settings(world.services, world.owner, request)
    assert refused.value.message == (
        f"A model runs 1 to {limit} instances (setting max_instance_count); {limit + 1} is out "
        "of range."
    )
