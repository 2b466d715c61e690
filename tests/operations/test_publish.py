"""Publish as one operation: what it checks before the project arrives, who may, and the
version with its event."""

from __future__ import annotations

import io
import tarfile

import pytest

from modelhost import errors
from modelhost.operations.publish import (
    PublishRequest,
    check_publish,
    publish_version,
    validate_model_name,
)
from tests.helpers import PROJECTS
from tests.operations.conftest import World


def _archive() -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(PROJECTS / "calc" / "calc.py", arcname="calc.py")
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"file": "../calc.py"}, "must be a path inside the project"),
        ({"function": "not a name"}, "is not a valid function name"),
        ({"concurrency": 0}, "concurrency is the number of calls one instance runs at once"),
        ({"environment": "Not/A/Name"}, "is not an environment"),
        ({"git_commit": "abc"}, "git_commit must be a full commit hash"),
        ({"model": "Bad Name"}, "Bad Name"),
    ],
)
def test_publish_refuses_a_bad_request_before_the_project_arrives(
    world: World, change: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {"model": "wine", "file": "calc.py", "function": "add", **change}
    with pytest.raises(errors.BadRequest, match=message):
        check_publish(world.services, world.owner, PublishRequest(**fields))  # type: ignore[arg-type]


def test_a_viewer_who_publishes_is_forbidden_and_the_refusal_is_audited(world: World) -> None:
    request = PublishRequest("wine", "calc.py", "add")
    with pytest.raises(errors.Forbidden, match="publish needs editor"):
        publish_version(world.services, world.viewer, request, _archive())
    [event] = world.events("publish")
    assert (event["actor"], event["outcome"]) == ("vera", "denied")
    assert world.services.repo.list_versions(world.model.id) == []


def test_an_editor_publishes_a_version_and_its_event_in_one_go(world: World) -> None:
    request = PublishRequest("wine", "calc.py", "add", environment="server")
    model, version = publish_version(
        world.services, world.editor, request, _archive(), detail={"run_id": "r1"}
    )
    assert (model.name, version.number, version.status) == ("wine", 1, "building")
    [event] = world.events("publish")
    assert (event["actor"], event["version"], event["outcome"]) == ("eddie", 1, "success")
    assert event["detail"] == {
        "entry_point": "calc.py:add",
        "environment": "server",
        "run_id": "r1",
    }


def test_a_publish_whose_last_step_fails_leaves_no_version_and_a_failed_event(
    world: World,
) -> None:
    def refuse(_version: object) -> None:
        raise errors.Conflict("This run has already published a version.")

    request = PublishRequest("wine", "calc.py", "add")
    with pytest.raises(errors.Conflict):
        publish_version(world.services, world.owner, request, _archive(), then=refuse)
    assert world.services.repo.list_versions(world.model.id) == []
    [event] = world.events("publish")
    assert event["outcome"] == "failed"


def test_a_missing_file_is_named_with_what_the_project_has(world: World) -> None:
    request = PublishRequest("wine", "predict.py", "predict")
    with pytest.raises(errors.EntryPointNotFound, match=r"Files at its top level: calc\.py"):
        publish_version(world.services, world.owner, request, _archive())


def test_a_new_models_name_that_looks_like_an_id_is_refused_saying_why() -> None:
    # docs/cli.md: a new model's name may not be 24 hexadecimal characters (how ids look)
    with pytest.raises(errors.BadRequest) as refused:
        validate_model_name("deadbeefdeadbeefdeadbeef")
    assert "24 hexadecimal characters" in refused.value.message
    assert "lowercase letters" not in refused.value.message  # it follows that rule already
    with pytest.raises(errors.BadRequest, match="lowercase letters"):
        validate_model_name("Bad Name")
    assert validate_model_name("deadbeefdeadbeefdeadbee") == "deadbeefdeadbeefdeadbee"
