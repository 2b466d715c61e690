"""The tester and example inputs on a real server (issue 20, point 1): a user who can view a
model calls it without an access token, each call is audited as a test-call, and a version
carries the example input the tester and the snippets start from."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelhost import errors
from modelhost.client import Client
from tests.helpers import PROJECTS, WINE_ROW, Server, running_server, wait_until

pytestmark = pytest.mark.integration

EXAMPLE = {"data": {"x": 2, "y": 3}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("tester") / "home") as running:
        admin = running.client()
        for name in ("t-viewer", "t-stranger"):
            admin.add_user(name, f"{name}-password")
        yield running


@pytest.fixture(scope="module")
def calc(server: Server) -> str:
    """calc, published with an example from the CLI, token-required, t-viewer a viewer."""
    done = server.cli(
        "publish",
        str(PROJECTS / "calc" / "calc.py") + ":add",
        "--name",
        "calc",
        "--example",
        json.dumps(EXAMPLE),
        check=True,
    )
    assert "Version 1 of calc is running" in done.stdout
    admin = server.client()
    admin.set_access("calc", invocation="token")
    admin.set_collaborator("calc", "t-viewer", "viewer")
    wait_until(lambda: server.invoke("calc", EXAMPLE).status_code == 401)
    return "calc"


def _as(server: Server, name: str) -> Client:
    return Client.login(server.url, name, f"{name}-password")


def test_a_version_keeps_the_example_it_was_published_with(server: Server, calc: str) -> None:
    assert server.client().version(calc, 1)["example"] == EXAMPLE


def test_a_viewer_calls_a_token_model_as_the_tester_without_a_token(
    server: Server, calc: str
) -> None:
    with _as(server, "t-viewer") as viewer:
        answer = viewer.predict(calc, data={"x": 20, "y": 22}, as_tester=True)
    assert answer.result == 42
    assert answer.release["model_version_number"] == 1
    events = server.client().audit(calc, action="test-call")
    assert events[0]["actor"] == "t-viewer"
    assert events[0]["outcome"] == "success"
    assert events[0]["detail"]["request_id"] == answer.request_id


def test_the_testers_answer_is_the_models_own_error_and_is_audited_as_failed(
    server: Server, calc: str
) -> None:
    with _as(server, "t-viewer") as viewer, pytest.raises(errors.ModelhostError) as raised:
        viewer.predict(calc, data={"x": 1}, as_tester=True)
    assert raised.value.status == 400
    assert "add(x, y)" in raised.value.message
    events = server.client().audit(calc, action="test-call")
    assert events[0]["outcome"] == "failed"
    assert events[0]["detail"]["status"] == 400


def test_the_tester_calls_a_route_by_version_and_refuses_an_unknown_route(
    server: Server, calc: str
) -> None:
    key = server.client().create_key("tester-routes")
    url = f"{server.url}/api/v1/models/{calc}/test"
    headers = {"Authorization": f"Bearer {key}"}
    sent = httpx.post(url, params={"route": "versions/1"}, json=EXAMPLE, headers=headers)
    assert sent.status_code == 200, sent.text
    assert sent.json()["result"] == 5
    bad = httpx.post(url, params={"route": "nowhere"}, json=EXAMPLE, headers=headers)
    assert bad.status_code == 400
    assert "labels/NAME" in bad.json()["error"]["message"]


def test_a_user_who_cannot_see_the_model_cannot_test_it(server: Server, calc: str) -> None:
    with _as(server, "t-stranger") as stranger, pytest.raises(errors.ModelNotFound):
        stranger.predict(calc, data=EXAMPLE["data"], as_tester=True)


def test_the_wine_example_starts_the_tester_from_a_body_it_answers(
    server: Server, wine_project: Path
) -> None:
    """The tester's first body used to be {"data": {"features": 0}}, which the wine example
    answered with a 500; it now starts from the example's own example.json."""
    version = server.client().publish(
        wine_project, name="wine", file="predict.py", function="predict"
    )
    example = version["example"]
    assert example == {"parameters": [WINE_ROW]}
    answer = server.client().predict("wine", parameters=example["parameters"], as_tester=True)
    assert 3 <= answer.result <= 8


def test_an_example_json_in_the_project_is_the_versions_example(
    server: Server, tmp_path: Path
) -> None:
    project = tmp_path / "withfile"
    project.mkdir()
    shutil.copy(PROJECTS / "calc" / "calc.py", project / "calc.py")
    (project / "example.json").write_text('{"parameters": [4, 5]}')
    version = server.client().publish(project, name="calc-file", file="calc.py", function="add")
    assert version["example"] == {"parameters": [4, 5]}


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"x": 1}', "exactly one key, 'data'"),
        ('{"data": {"x": 1}, "parameters": [1]}', "exactly one key, 'data'"),
        ('{"data": [1, 2]}', "'data' that is not an object"),
        ('{"parameters": {"x": 1}}', "'parameters' that is not an array"),
    ],
)
def test_a_bad_example_is_refused_with_a_specific_error_line(
    server: Server, example: str, message: str
) -> None:
    done = server.cli(
        "publish",
        str(PROJECTS / "calc" / "calc.py") + ":add",
        "--name",
        "calc-bad",
        "--example",
        example,
    )
    assert done.returncode == 1
    assert "Error: The example" in done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_example_json_in_the_project_names_the_file(server: Server, tmp_path: Path) -> None:
    project = tmp_path / "badfile"
    project.mkdir()
    shutil.copy(PROJECTS / "calc" / "calc.py", project / "calc.py")
    (project / "example.json").write_text("[1, 2]")
    with pytest.raises(errors.BadRequest) as raised:
        server.client().publish(project, name="calc-badfile", file="calc.py", function="add")
    assert "The project's example.json must be a JSON object" in raised.value.message


def test_an_example_file_that_does_not_exist_is_an_error_line(server: Server) -> None:
    done = server.cli(
        "publish",
        str(PROJECTS / "calc" / "calc.py") + ":add",
        "--name",
        "calc-nofile",
        "--example",
        "no-such-example.json",
    )
    assert done.returncode == 1
    assert "Error: --example: there is no file 'no-such-example.json'" in done.stderr
