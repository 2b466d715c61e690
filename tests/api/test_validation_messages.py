"""Mistakes in a management request that FastAPI catches before a route runs, each answered with
what to send (found in a new-user review): a value of the wrong kind, a body without a JSON
``Content-Type``, JSON nested too deeply, and an audit ``since`` written as captures take it."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio

SEND_JSON = "send the body as JSON with 'Content-Type: application/json'"


@pytest.mark.parametrize(
    ("method", "path", "request_args", "message"),
    [
        (
            "GET",
            "/api/v1/models/m/audit",
            {"params": {"format": "xml"}},
            "Invalid request: query.format: must be json or csv, not 'xml'.",
        ),
        (
            "GET",
            "/api/v1/models/m/versions/abc",
            {},
            "Invalid request: path.number: must be a whole number such as 3, not 'abc'.",
        ),
        (
            "POST",
            "/api/v1/models/m/deploy",
            {"json": {"version": "x"}},
            "Invalid request: version: must be a whole number such as 3, not 'x'.",
        ),
        (
            "PUT",
            "/api/v1/models/m/env/OK",
            {"json": {"value": 5}},
            "Invalid request: value: must be a string (in double quotes in JSON), not 5.",
        ),
        (
            "PATCH",
            "/api/v1/models/m",
            {"json": {"timeout_seconds": "x", "log_requests": "yes"}},
            "Invalid request: timeout_seconds: must be a number such as 2.5, not 'x'; "
            "log_requests: must be true or false, not 'yes'.",
        ),
        (
            "POST",
            "/api/v1/keys",
            {"json": {"name": "k", "expires_in_days": 0}},
            "Invalid request: expires_in_days: must be 1 or more, not 0.",
        ),
        ("POST", "/api/v1/models", {"json": {}}, "Invalid request: name: Field required."),
        (
            "POST",
            "/api/v1/models/m/deploy",
            {"json": [3]},
            "Invalid request: the body must be a JSON object ({...}), not [3].",
        ),
    ],
)
async def test_a_value_of_the_wrong_kind_says_where_it_is_and_what_to_send_instead(
    admin_http: httpx.AsyncClient,
    method: str,
    path: str,
    request_args: dict[str, object],
    message: str,
) -> None:
    response = await admin_http.request(method, path, **request_args)  # type: ignore[arg-type]
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {"code": "bad_request", "message": message}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/models/m/deploy"),
        ("PUT", "/api/v1/models/m/env/OK"),
        ("PATCH", "/api/v1/models/m"),
        ("POST", "/api/v1/models/m/stop"),
        ("POST", "/api/v1/keys"),
    ],
)
async def test_a_json_body_sent_as_a_form_is_a_415_that_says_to_send_json(
    admin_http: httpx.AsyncClient, method: str, path: str
) -> None:
    before = (await admin_http.get("/api/v1/models/m")).json()
    # what curl -d sends without -H 'Content-Type: application/json'
    response = await admin_http.request(
        method,
        path,
        content=b'{"version": 1, "value": "x", "name": "k"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415, response.text
    assert response.json()["error"] == {
        "code": "unsupported_media_type",
        "message": "Content-Type 'application/x-www-form-urlencoded' is not supported; "
        f"{SEND_JSON}.",
    }
    assert (await admin_http.get("/api/v1/models/m")).json() == before
    assert (await admin_http.get("/api/v1/models/m/env")).json() == {"variables": []}


async def test_a_json_body_without_any_content_type_is_a_415_that_says_to_send_json(
    admin_http: httpx.AsyncClient,
) -> None:
    request = admin_http.build_request("POST", "/api/v1/models/m/deploy", content=b'{"version":1}')
    assert "Content-Type" not in request.headers
    response = await admin_http.send(request)
    assert response.status_code == 415, response.text
    assert response.json()["error"]["message"] == (
        f"The request has a body but no Content-Type; {SEND_JSON}."
    )


async def test_requests_without_a_body_and_uploads_of_other_types_still_work(
    admin_http: httpx.AsyncClient,
) -> None:
    stopped = await admin_http.post("/api/v1/models/m/stop")
    assert stopped.status_code == 200, stopped.text
    started = await admin_http.post("/api/v1/models/m/start", json={})
    assert started.status_code == 200, started.text
    # a drift report takes its reference as a CSV body: not refused for its type
    drift = await admin_http.post(
        "/api/v1/models/m/captures/drift",
        content=b"a,b\n1,2\n",
        headers={"Content-Type": "text/csv"},
    )
    assert drift.status_code != 415, drift.text
    # (the admin_http fixture publishes a .tar.gz with Content-Type: application/gzip)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"version": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["the body", "a field"],
)
async def test_json_nested_too_deeply_is_a_400_that_says_to_send_flatter_json(
    admin_http: httpx.AsyncClient, body: bytes
) -> None:
    response = await admin_http.post(
        "/api/v1/models/m/deploy", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("The request body is nested too deeply (more than about 1,000")
    assert message.endswith("; send flatter JSON.")


async def test_a_body_that_is_not_utf8_is_a_400_that_says_to_send_utf8_json(
    admin_http: httpx.AsyncClient,
) -> None:
    response = await admin_http.post(
        "/api/v1/models/m/deploy",
        content=b'{"version": "\xff"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == (
        "The request body is not UTF-8 text; send JSON in UTF-8 with "
        "'Content-Type: application/json'."
    )


@pytest.mark.parametrize("since", ["90m", "24h", "7d", "2000-01-01", "2000-01-01T09:30Z"])
@pytest.mark.parametrize("path", ["/api/v1/models/m/audit", "/api/v1/audit"])
async def test_audit_since_takes_the_times_captures_take(
    admin_http: httpx.AsyncClient, path: str, since: str
) -> None:
    response = await admin_http.get(path, params={"since": since})
    assert response.status_code == 200, response.text
    assert [e["action"] for e in response.json()["events"]] == ["publish"]
    later = await admin_http.get(path, params={"since": "2999-01-01"})
    assert later.json() == {"events": []}


@pytest.mark.parametrize("since", ["yesterday", "garbage", "24", "2026-13-01"])
async def test_audit_since_that_is_not_a_time_is_a_400_worded_as_captures_word_it(
    admin_http: httpx.AsyncClient, since: str
) -> None:
    audit = await admin_http.get("/api/v1/models/m/audit", params={"since": since})
    captures = await admin_http.get("/api/v1/models/m/captures", params={"since": since})
    assert audit.status_code == captures.status_code == 400, audit.text
    assert audit.json()["error"] == captures.json()["error"]
    assert audit.json()["error"]["message"] == (
        f"since '{since}' is not a time; give a date or time such as 2026-12-01 or "
        "2026-12-01T09:30Z, or a time back from now such as 90m, 24h or 7d."
    )
