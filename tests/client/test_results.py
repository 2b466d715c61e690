"""The client's answers are typed records that still read like the JSON the server sent."""

from __future__ import annotations

import json

import httpx
import pytest

from modelhost import Client, Model, Run, Schedule, Version
from modelhost.cli.output import print_json

MODEL = {"id": "m1", "name": "wine", "status": "running", "invocation_mode": "token", "extra": 7}


def _client(answers: dict[str, object]) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers[request.url.path])

    return Client("http://server", "mh_key", transport=httpx.MockTransport(handler))


def test_a_model_has_typed_fields_and_dict_access_to_everything_the_server_sent() -> None:
    with _client({"/api/v1/models/wine": MODEL}) as client:
        model = client.model("wine")
    assert isinstance(model, Model)
    assert (model.name, model.status, model.invocation_mode) == ("wine", "running", "token")
    assert model["name"] == "wine"
    assert model.get("invocation_mode") == "token"
    assert model["extra"] == 7  # a field this client does not know yet
    assert model.get("missing") is None
    assert "extra" in model
    assert model == MODEL
    assert dict(model) == MODEL == model.to_dict()


def test_a_field_the_server_does_not_send_keeps_its_default() -> None:
    version = Version.from_json({"number": 3})
    assert (version.number, version.status, version.build_log) == (3, "", None)
    with pytest.raises(KeyError):
        version["status"]


def test_lists_are_lists_of_records() -> None:
    runs = {"runs": [{"id": "r1", "status": "succeeded", "exit_code": 0}]}
    with _client({"/api/v1/runs": runs}) as client:
        found = client.runs()
    assert [type(run) for run in found] == [Run]
    assert found[0].exit_code == 0


def test_a_schedules_last_run_is_a_run() -> None:
    schedule = Schedule.from_json({"id": "s1", "paused": True, "last_run": {"id": "r1"}})
    assert schedule.paused is True
    assert isinstance(schedule.last_run, Run)
    assert schedule.last_run.id == "r1"
    assert schedule["last_run"] == {"id": "r1"}


def test_records_print_as_the_json_the_server_sent(capsys: pytest.CaptureFixture[str]) -> None:
    print_json([Model.from_json(MODEL)])
    assert json.loads(capsys.readouterr().out) == [MODEL]


def test_records_cannot_be_changed() -> None:
    model = Model.from_json(MODEL)
    with pytest.raises(AttributeError):
        model.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        model["name"] = "other"  # type: ignore[index]
