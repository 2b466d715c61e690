"""Mistakes a user makes with the management API, each answered with what to do (found in a
user trial): a log time that is not a time, and a body that is not JSON."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_logs_after_something_that_is_not_a_time_is_a_400_saying_what_a_time_looks_like(
    admin_http: httpx.AsyncClient,
) -> None:
    response = await admin_http.get("/api/v1/models/m/logs", params={"after": "yesterday"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "after is a log line's time, such as 2026-12-07T01:02:03.456Z" in message
    assert "'yesterday'" in message
    fine = await admin_http.get("/api/v1/models/m/logs", params={"after": "2026-12-07T01:02:03Z"})
    assert fine.status_code == 200


async def test_a_body_that_is_not_json_is_a_400_that_says_so(
    admin_http: httpx.AsyncClient,
) -> None:
    response = await admin_http.patch(
        "/api/v1/models/m", content=b"notjson", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("The request body is not valid JSON (")
    assert "at character 0" in message
