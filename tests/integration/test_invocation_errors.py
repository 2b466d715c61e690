"""Every way a call can fail answers with the one error envelope and the documented status."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import PROJECTS, Server, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def models(server: Server) -> Server:
    client = server.client()
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="err-calc")
    client.publish(PROJECTS / "kitchen", file="kitchen.py", function="kitchen", name="err-kit")
    return server


def _post(server: Server, path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.post(f"{server.url}{path}", timeout=60, **kwargs)


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert response.headers["x-request-id"] == body["request_id"]
    assert "Traceback" not in body["error"]["message"]
    return str(body["error"]["message"])


LATEST = "/models/err-calc/latest/model"
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "'data' object"),
        (b"{}", "'data' object"),
        (b'{"data": {"x": 1}, "parameters": [1]}', "has both 'data' and 'parameters'"),
        (b'{"data": [1, 2]}', "'data' must be a JSON object"),
        (b'{"parameters": {"x": 1}}', "'parameters' must be a JSON array"),
        # not JSON (RFC 8259 has no NaN or Infinity), however Python's json reads them
        (b'{"parameters": [NaN, 1]}', "NaN is not a JSON value; send null or a finite number"),
        (b'{"data": {"x": -Infinity, "y": 1}}', "-Infinity is not a JSON value"),
        (b'{"parameters": [1e999, 1]}', "1e999 is too large for a 64-bit float"),
    ],
)
def test_a_badly_shaped_body_is_a_400_that_says_what_to_send(
    models: Server, body: bytes, fragment: str
) -> None:
    message = _error(_post(models, LATEST, content=body, headers=JSON), 400, "bad_request")
    assert fragment in message


def test_a_body_with_neither_data_nor_parameters_is_not_told_to_send_only_one(
    models: Server,
) -> None:
    message = _error(_post(models, LATEST, content=b'{"x": 1}', headers=JSON), 400, "bad_request")
    assert "both" not in message
    assert "'data' object (keyword arguments)" in message


@pytest.mark.parametrize(
    "body",
    [{"data": {"x": 1}}, {"data": {"x": 1, "y": 2, "z": 3}}, {"parameters": [1, 2, 3]}],
)
def test_arguments_that_do_not_bind_are_a_400_naming_the_parameters(
    models: Server, body: dict
) -> None:
    message = _error(_post(models, LATEST, json=body), 400, "invalid_arguments")
    assert "add(x, y)" in message


def test_an_unknown_model_is_a_404(models: Server) -> None:
    message = _error(
        _post(models, "/models/nobody/latest/model", json={"data": {}}), 404, "model_not_found"
    )
    assert "nobody" in message


def test_an_unknown_version_or_route_is_a_404(models: Server) -> None:
    _error(
        _post(models, "/models/err-calc/versions/99/model", json={"data": {}}),
        404,
        "version_not_found",
    )
    _error(
        _post(models, "/models/err-calc/versions/one/model", json={"data": {}}),
        404,
        "version_not_found",
    )
    _error(
        _post(models, "/models/err-calc/labels/prod/model", json={"data": {}}),
        404,
        "route_not_found",
    )
    _error(
        _post(models, "/models/err-calc/oldest/model", json={"data": {}}), 404, "route_not_found"
    )


def test_a_specific_running_version_can_be_called(models: Server) -> None:
    response = _post(models, "/models/err-calc/versions/1/model", json={"parameters": [2, 2]})
    assert response.json()["result"] == 4


def test_get_is_a_405_with_allow(models: Server) -> None:
    response = httpx.get(f"{models.url}{LATEST}")
    _error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_a_non_json_content_type_is_a_415(models: Server) -> None:
    response = _post(
        models,
        LATEST,
        content=b"x=1&y=2",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "application/json" in _error(response, 415, "unsupported_media_type")


def test_a_body_over_the_limit_is_a_413(models: Server) -> None:
    big = b'{"parameters": ["' + b"a" * (11 * 1024 * 1024) + b'", "b"]}'
    _error(_post(models, LATEST, content=big, headers=JSON), 413, "payload_too_large")


def test_a_raising_function_is_a_500_with_type_and_message_and_the_traceback_in_the_log(
    models: Server,
) -> None:
    response = _post(
        models, "/models/err-kit/latest/model", json={"data": {"case": "raise", "arg": "boom-7"}}
    )
    message = _error(response, 500, "model_error")
    assert message == "kitchen raised ValueError: bad input: boom-7"
    assert response.headers["x-model-version"] == "1"  # which version failed
    request_id = response.json()["request_id"]
    log = wait_until(
        lambda: "\n".join(
            line["text"]
            for line in models.client().logs("err-kit", tail=500)
            if "Traceback" in line["text"] or request_id in line["text"] or "boom-7" in line["text"]
        )
    )
    assert request_id in log
    assert "ValueError: bad input: boom-7" in log


@pytest.mark.parametrize(
    ("case", "fragment"),
    [("nan", "NaN or Infinity"), ("object", "cannot be converted to JSON")],
)
def test_a_result_json_cannot_hold_is_a_500_that_says_so(
    models: Server, case: str, fragment: str
) -> None:
    response = _post(models, "/models/err-kit/latest/model", json={"data": {"case": case}})
    assert fragment in _error(response, 500, "result_not_serializable")


def test_an_instance_that_dies_mid_call_is_a_502_and_is_replaced(models: Server) -> None:
    response = _post(models, "/models/err-kit/latest/model", json={"data": {"case": "crash"}})
    assert "died during the call" in _error(response, 502, "instance_crashed")
    assert response.headers["Retry-After"] == "1"  # worth retrying: a replacement is on its way

    # The next call waits for the replacement instead of failing.
    reply = _post(models, "/models/err-kit/latest/model", json={"data": {"case": "echo", "arg": 1}})
    assert reply.status_code == 200, reply.text
    wait_until(
        lambda: any(
            "exited with code 1; it will be replaced" in line["text"]
            for line in models.client().logs("err-kit", tail=1000)
        )
    )


def test_a_function_that_calls_sys_exit_ends_its_instance_and_the_log_says_with_what_code(
    models: Server,
) -> None:
    response = _post(
        models, "/models/err-kit/latest/model", json={"data": {"case": "exit", "arg": 3}}
    )
    assert _error(response, 502, "instance_crashed")
    assert response.headers["Retry-After"] == "1"
    wait_until(
        lambda: any(
            "exited with code 3; it will be replaced" in line["text"]
            for line in models.client().logs("err-kit", tail=1000)
        )
    )
    lines = [line["text"] for line in models.client().logs("err-kit", tail=1000)]
    assert not any("killed by signal" in line for line in lines)


def test_a_call_past_the_timeout_is_a_504_and_the_instance_is_replaced(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "kitchen", file="kitchen.py", function="kitchen", name="err-slow")
    client.update_model("err-slow", timeout_seconds=1)
    response = _post(
        server, "/models/err-slow/latest/model", json={"data": {"case": "sleep", "arg": 30}}
    )
    assert "within 1 s" in _error(response, 504, "model_timeout")

    def answers() -> bool:
        reply = _post(
            server, "/models/err-slow/latest/model", json={"data": {"case": "sleep", "arg": 0}}
        )
        return reply.status_code == 200 and reply.json()["result"] == "slept"

    wait_until(answers, timeout=30, interval=0.2)


def test_management_routes_answer_in_the_same_envelope(models: Server) -> None:
    response = httpx.get(
        f"{models.url}/api/v1/models/nobody", headers={"Authorization": f"Bearer {models.api_key}"}
    )
    _error(response, 404, "model_not_found")
    _error(httpx.get(f"{models.url}/api/v1/models"), 401, "unauthenticated")
    _error(
        httpx.get(
            f"{models.url}/api/v1/nothing-here",
            headers={"Authorization": f"Bearer {models.api_key}"},
        ),
        404,
        "not_found",
    )


def test_a_model_whose_only_version_failed_to_load_is_told_to_publish_a_fixed_one(
    server: Server,
) -> None:
    published = server.cli(
        "publish", f"{PROJECTS / 'import_error'}/predict.py:predict", "--name", "err-broken"
    )
    assert published.returncode == 1, published.stderr
    message = _error(
        _post(server, "/models/err-broken/latest/model", json={"data": {}}),
        503,
        "no_ready_instance",
    )
    assert message == (
        "Model 'err-broken' has no ready version yet; its versions failed to build or load "
        "('modelhost versions err-broken' says why); publish a fixed version."
    )
    message = _error(
        _post(server, "/models/err-broken/versions/1/model", json={"data": {}}),
        503,
        "no_ready_instance",
    )
    assert message == (
        "Version 1 of model 'err-broken' is not running (status: failed): it failed to build "
        "or load; 'modelhost versions err-broken --number 1' says why. Publish a fixed version."
    )


def test_a_stopped_version_is_told_how_to_start_it(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="err-stopped")
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="err-stopped")
    assert server.cli("stop", "err-stopped", "--version", "1").returncode == 0

    def refused() -> str | None:
        response = _post(server, "/models/err-stopped/versions/1/model", json={"data": {}})
        return None if response.status_code != 503 else _error(response, 503, "no_ready_instance")

    assert wait_until(refused) == (
        "Version 1 of model 'err-stopped' is not running (status: stopped): start it with "
        "'modelhost start err-stopped --version 1'."
    )
