"""Asynchronous predictions against a real server (issue 19, point 1): submit, poll, who may
read, the hosted product's async paths with a client written as its docs show, the instance
share, the webhook, the client and the CLI, and a restart in the middle."""

from __future__ import annotations

import csv
import hashlib
import hmac
import http.server
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelhost import Client, errors
from tests.helpers import PROJECTS, Server, running_server, wait_until

#: the default share, said out loud: the tests of the share count on it
SHARE_ENV = {"MODELHOST_ASYNC_INSTANCE_SHARE": "0.5"}


def _publish(server: Server, name: str, project: str, file: str, function: str) -> None:
    server.client().publish(PROJECTS / project, file=file, function=function, name=name)
    body = {"data": {}} if project == "fussy" else {"data": {"x": 1, "y": 2}}
    wait_until(lambda: server.invoke(name, body).status_code == 200, timeout=60)


@pytest.fixture(scope="module")
def calc(server: Server) -> str:
    _publish(server, "acalc", "calc", "calc.py", "add")
    return "acalc"


def _poll(server: Server, location: str, **kwargs: Any) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        answer = httpx.get(server.url + location, **kwargs).json()
        return answer if answer["status"] in ("succeeded", "failed") else None

    found: dict[str, Any] = wait_until(ended, timeout=60)
    return found


def test_a_submitted_prediction_is_queued_then_answers_as_the_synchronous_call(
    server: Server, calc: str
) -> None:
    response = httpx.post(
        f"{server.url}/models/{calc}/latest/async", json={"data": {"x": 2, "y": 3}}
    )
    assert response.status_code == 202
    submitted = response.json()
    assert submitted["status"] == "queued"
    assert (
        response.headers["location"]
        == f"/models/{calc}/predictions/{submitted['asyncPredictionId']}"
    )
    found = _poll(server, response.headers["location"])
    assert found["status"] == "succeeded"
    assert found["result"] == 5
    assert found["release"]["model_version_number"] == 1
    # the request log has the submit (202, with its source) and the call (200, its version)
    request_id = found["request_id"]

    def logged() -> list[tuple[object, object, object]]:
        lines = server.client().requests(calc)
        mine = [
            (x["status"], x["route"], x["version"]) for x in lines if x["request_id"] == request_id
        ]
        return mine if len(mine) == 2 else []

    assert sorted(wait_until(logged, timeout=30), key=str) == [
        (200, "latest", 1),
        (202, "latest", None),
    ]
    versioned = httpx.post(
        f"{server.url}/models/{calc}/versions/1/async", json={"parameters": [4, 5]}
    )
    assert versioned.status_code == 202
    assert _poll(server, versioned.headers["location"])["result"] == 9


def test_a_failing_prediction_reports_the_error_envelope_object(server: Server, calc: str) -> None:
    response = httpx.post(f"{server.url}/models/{calc}/latest/async", json={"data": {"x": 1}})
    assert response.status_code == 202
    found = _poll(server, response.headers["location"])
    assert found["status"] == "failed"
    assert found["error"]["code"] == "invalid_arguments"  # docs/api.md's table of errors
    assert found["http_status"] == 400
    assert "y" in found["error"]["message"]
    assert "result" not in found


@pytest.mark.parametrize(
    ("content", "content_type", "status", "words"),
    [
        (b"not json", "application/json", 400, "not JSON"),
        (b"[1, 2]", "application/json", 400, "'data' object or a 'parameters' array"),
        (b'{"data": {}, "parameters": []}', "application/json", 400, "both"),
        (b'{"data": [1]}', "application/json", 400, "'data' must be a JSON object"),
        (b'{"data": {}}', "text/plain", 415, "Content-Type"),
    ],
)
def test_a_bad_body_is_refused_before_anything_is_queued(
    server: Server, calc: str, content: bytes, content_type: str, status: int, words: str
) -> None:
    response = httpx.post(
        f"{server.url}/models/{calc}/latest/async",
        content=content,
        headers={"Content-Type": content_type},
    )
    assert response.status_code == status
    assert set(response.json()) == {"error", "request_id"}
    assert words in response.json()["error"]["message"]


def test_a_body_over_the_size_limit_is_refused_with_413(server: Server, calc: str) -> None:
    big = json.dumps({"data": {"x": "a" * 11_000_000, "y": ""}}).encode()
    response = httpx.post(
        f"{server.url}/models/{calc}/latest/async",
        content=big,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_only_the_submitting_token_or_a_user_with_access_reads_a_prediction(
    server: Server,
) -> None:
    client = server.client()
    _publish(server, "aprivate", "calc", "calc.py", "add")
    client.set_access("aprivate", invocation="token")
    mine = client.create_token("aprivate", "mine").token
    theirs = client.create_token("aprivate", "theirs").token
    assert mine
    assert theirs
    refused = httpx.post(
        f"{server.url}/models/aprivate/latest/async", json={"data": {"x": 1, "y": 1}}
    )
    assert refused.status_code == 401
    response = httpx.post(
        f"{server.url}/models/aprivate/latest/async",
        json={"data": {"x": 1, "y": 1}},
        auth=(mine, mine),
    )
    assert response.status_code == 202
    location = server.url + response.headers["location"]
    found = _poll(server, response.headers["location"], headers={"Authorization": f"Bearer {mine}"})
    assert found["result"] == 2
    for headers in ({"Authorization": f"Bearer {theirs}"}, {}):
        other = httpx.get(location, headers=headers)
        assert other.status_code == 404  # not 403: an id cannot be probed
        assert other.json()["error"]["code"] == "not_found"
        # ... but it says what would read it, as it cannot tell which case this is
        assert "read it with the access token it was submitted with" in other.text
    admin = httpx.get(location, headers={"Authorization": f"Bearer {server.api_key}"})
    assert admin.json()["result"] == 2
    unknown = httpx.get(
        f"{server.url}/models/aprivate/predictions/nosuchid",
        headers={"Authorization": f"Bearer {mine}"},
    )
    assert unknown.status_code == 404


def test_a_client_written_for_the_hosted_async_api_gets_its_result(
    server: Server, calc: str
) -> None:
    # As the hosted product's example client does: POST {"parameters": {...}} to
    # /api/modelApis/async/v1/{modelId}, expect 200 and "asyncPredictionId", then GET
    # .../{asyncPredictionId} while the status is "queued", until "succeeded" or "failed".
    model_id = server.client().model(calc).id
    base = f"{server.url}/api/modelApis/async/v1/{model_id}"
    headers = {"Authorization": "Bearer anything"}  # a public model takes any

    def run(parameters: dict[str, Any]) -> dict[str, Any]:
        create = httpx.post(base, headers=headers, json={"parameters": parameters})
        assert create.status_code == 200
        prediction_id = create.json()["asyncPredictionId"]
        status: dict[str, Any] = {"status": "queued"}
        deadline = time.monotonic() + 60
        while status["status"] in ["queued"] and time.monotonic() < deadline:
            response = httpx.get(f"{base}/{prediction_id}", headers=headers)
            assert response.status_code == 200
            status = response.json()
        return status

    succeeded = run({"x": 20, "y": 22})
    assert succeeded["status"] == "succeeded"
    assert succeeded["result"] == 42
    failed = run({"x": 1})
    assert failed["status"] == "failed"
    assert isinstance(failed["errors"], list)
    assert "y" in failed["errors"][0]


def test_the_client_submits_and_waits_for_a_result_and_the_cli_does_too(
    server: Server, calc: str
) -> None:
    client = server.client()
    submitted = client.submit(calc, data={"x": 3, "y": 4})
    assert submitted.status == "queued"
    found = client.result(submitted, wait=True)
    assert (found.status, found.result) == ("succeeded", 7)
    assert found.release is not None
    cli = server.cli("call", calc, "--parameters", "[5, 6]", "--async", check=True)
    prediction_id = cli.stdout.strip()
    assert f"modelhost prediction {calc} {prediction_id}" in cli.stderr
    answer = server.cli("prediction", calc, prediction_id, "--wait", check=True)
    assert json.loads(answer.stdout) == 11
    # docs/cli.md: --full prints the whole answer, as GET .../predictions/ID gives it
    full = json.loads(server.cli("prediction", calc, prediction_id, "--full", check=True).stdout)
    direct = httpx.get(
        f"{server.url}/models/{calc}/predictions/{prediction_id}",
        headers={"Authorization": f"Bearer {server.api_key}"},
    ).json()
    assert full == direct
    assert {"timing", "model_time_in_ms", "finished_at"} <= set(full)
    assert found.version == found.release["model_version_number"]


def test_async_work_keeps_to_its_share_and_a_synchronous_call_is_answered_meanwhile(
    server: Server,
) -> None:
    client = server.client()
    _publish(server, "ashare", "fussy", "model.py", "work")
    client.update_model("ashare", instance_count=2)
    wait_until(lambda: len([i for i in client.instances("ashare") if i["state"] == "ready"]) == 2)
    ids = [client.submit("ashare", data={"delay": 30}).id for _ in range(3)]

    def statuses() -> list[str]:
        return [client.result(i, model="ashare", wait=False).status for i in ids]

    # a share of 0.5 of two instances: one asynchronous call at a time
    wait_until(lambda: sorted(statuses()) == ["queued", "queued", "running"], timeout=30)
    answer = server.invoke("ashare", {"data": {}})
    assert answer.status_code == 200
    assert sorted(statuses()) == ["queued", "queued", "running"]
    metrics = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.api_key}"}
    ).text
    assert 'modelhost_async_predictions{model="ashare",status="queued"} 2.0' in metrics
    assert 'modelhost_async_predictions{model="ashare",status="running"} 1.0' in metrics
    assert 'modelhost_async_oldest_seconds{model="ashare",status="queued"}' in metrics


def test_an_async_call_has_its_own_timeout_longer_than_the_models(server: Server) -> None:
    client = server.client()
    _publish(server, "atimeout", "fussy", "model.py", "work")
    client.update_model("atimeout", timeout_seconds=1)
    body = {"data": {"delay": 1.5}}
    assert server.invoke("atimeout", body).json()["error"]["code"] == "model_timeout"
    found = client.result(client.submit("atimeout", **body), timeout=60)
    assert found.status == "succeeded"  # async_timeout_seconds: an hour by default


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_webhook_gets_each_ended_prediction_signed_with_hmac_sha256(
    server: Server, calc: str
) -> None:
    receiver = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        client = server.client()
        with pytest.raises(errors.BadRequest, match="http:// or https://"):
            client.set_webhook(calc, "ftp://x")
        secret = client.set_webhook(calc, url)["secret"]
        response = httpx.post(
            f"{server.url}/models/{calc}/latest/async", json={"data": {"x": 1, "y": 1}}
        )
        prediction_id = response.json()["asyncPredictionId"]
        headers, body = wait_until(
            lambda: next((r for r in _Receiver.received if prediction_id.encode() in r[1]), None),
            timeout=30,
        )
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Modelhost-Signature"], expected)
        assert json.loads(body)["status"] == "succeeded"
        assert json.loads(body)["result"] == 2
        client.set_webhook(calc, None)
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_with_two_gateway_processes_queued_predictions_run_after_a_crash_and_never_twice(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("async-restart") / "home"
    with running_server(home, {**SHARE_ENV, "MODELHOST_GATEWAY_PROCESSES": "2"}) as server:
        client = server.client()
        _publish(server, "arestart", "fussy", "model.py", "work")
        # each on a new connection, so both processes take some: all are read back
        model_id = client.model("arestart").id
        base = f"{server.url}/api/modelApis/async/v1/{model_id}"
        spread = [
            httpx.post(base, json={"parameters": {"delay": 0}}).json()["asyncPredictionId"]
            for _ in range(6)
        ]
        for prediction_id in spread:
            found = wait_until(
                lambda i=prediction_id: (
                    httpx.get(f"{base}/{i}").json()
                    if httpx.get(f"{base}/{i}").json()["status"] != "queued"
                    else None
                ),
                timeout=60,
            )
            assert found["status"] == "succeeded"
        running = client.submit("arestart", data={"delay": 60})
        wait_until(lambda: client.result(running, wait=False).status == "running", timeout=30)
        queued = [client.submit("arestart", data={"delay": 0}) for _ in range(2)]
        assert {client.result(q, wait=False).status for q in queued} == {"queued"}
        before = server.serving_pid
        os.kill(before, signal.SIGKILL)
        wait_until(lambda: server.serving_pid != before, timeout=30)
        fresh = Client(server.url, server.api_key)
        try:
            for q in queued:
                assert fresh.result(q, timeout=60).status == "succeeded"
            interrupted = fresh.result(running, wait=False)
            assert interrupted.status == "failed"
            assert interrupted.error is not None
            assert interrupted.error["code"] == "interrupted"
            assert "not run again" in interrupted.error["message"]
        finally:
            fresh.close()


def _requests_total(server: Server, model: str, code: str) -> float:
    """The model's ``modelhost_requests_total`` for ``code``, over its routes, from /metrics."""
    text = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.api_key}"}
    ).text
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("modelhost_requests_total{")
            and f'model="{model}"' in line
            and f'code="{code}"' in line
            and 'version="1"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_failed_async_call_counts_in_the_metrics_and_logs_the_version_it_ran_on(
    server: Server,
) -> None:
    _publish(server, "afail", "calc", "calc.py", "add")
    raising = {"data": {"x": "a", "y": 1}}  # str + int: the function raises, 500 model_error
    before = _requests_total(server, "afail", "500")
    response = httpx.post(f"{server.url}/models/afail/latest/async", json=raising)
    found = _poll(server, response.headers["location"])
    assert found["status"] == "failed"
    assert found["http_status"] == 500
    # docs/api.md (Prometheus): asynchronous calls count when they end, failures too
    wait_until(lambda: _requests_total(server, "afail", "500") == before + 1, timeout=30)
    request_id = found["request_id"]

    def ended() -> list[tuple[object, object]]:
        lines = server.client().requests("afail")
        return [
            (x["status"], x["version"])
            for x in lines
            if x["request_id"] == request_id and x["status"] != 202
        ]

    # docs/cli.md: the version is "-" only when the call reached none; this one ran on v1
    assert wait_until(ended, timeout=30) == [(500, 1)]


def test_an_async_call_over_its_timeout_names_the_setting_async_timeout_seconds(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("async-timeout") / "home"
    with running_server(home, {"MODELHOST_ASYNC_TIMEOUT_SECONDS": "1"}) as server:
        client = server.client()
        _publish(server, "aslow", "fussy", "model.py", "work")
        client.update_model("aslow", timeout_seconds=60)
        response = httpx.post(
            f"{server.url}/models/aslow/latest/async", json={"data": {"delay": 5}}
        )
        found = _poll(server, response.headers["location"])
        assert found["status"] == "failed"
        assert found["http_status"] == 504
        assert found["error"]["code"] == "model_timeout"
        # docs/settings.md: async_timeout_seconds replaces the model's timeout for these calls
        message = found["error"]["message"]
        assert message.startswith("The asynchronous call did not finish within 1 s")
        assert "raise async_timeout_seconds" in message
        assert "raise the timeout" not in message


def test_a_successful_async_call_is_captured_like_a_synchronous_one(
    server: Server, tmp_path: Path
) -> None:
    client = server.client()
    _publish(server, "acaptured", "calc", "calc.py", "add")
    client.update_model("acaptured", capture=True, capture_share=1.0)
    response = httpx.post(
        f"{server.url}/models/acaptured/latest/async", json={"parameters": [100, 1]}
    )
    found = _poll(server, response.headers["location"])
    assert found["status"] == "succeeded"
    failed = httpx.post(
        f"{server.url}/models/acaptured/latest/async", json={"parameters": ["a", 1]}
    )
    assert _poll(server, failed.headers["location"])["status"] == "failed"
    destination = tmp_path / "captured.csv"

    def rows() -> dict[str, dict[str, str]]:
        client.export_captures("acaptured", destination, since="1h", format="csv")
        with destination.open() as file:
            return {row["request_id"]: row for row in csv.DictReader(file)}

    # docs/privacy.md: capture keeps the inputs and outputs of a model's successful calls
    captured = wait_until(lambda: rows().get(found["request_id"]), timeout=30, interval=0.5)
    assert json.loads(captured["input"]) == {"parameters": [100, 1]}
    assert json.loads(captured["output"]) == 101
    assert captured["version"] == "1"
    assert len(rows()) == 1  # the failed one is not captured
