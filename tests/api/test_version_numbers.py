"""Version numbers a model does not have, in paths, queries and bodies: always a 404."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_logs_of_a_version_that_does_not_exist_are_a_404_not_an_empty_list(
    admin_http: httpx.AsyncClient,
) -> None:
    assert (await admin_http.get("/api/v1/models/m/logs", params={"version": 1})).status_code == 200
    response = await admin_http.get("/api/v1/models/m/logs", params={"version": 9})
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "version_not_found",
        "message": "Model 'm' has no version 9. 'modelhost versions m' lists them.",
    }


HUGE = 10**23  # past SQLite's and PostgreSQL's integers


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", f"/api/v1/models/m/versions/{HUGE}", {}, None),
        ("GET", "/api/v1/models/m/logs", {"version": HUGE}, None),
        ("POST", "/api/v1/models/m/deploy", {}, {"version": HUGE}),
        ("PUT", "/api/v1/models/m/labels/prod", {}, {"version": HUGE}),
    ],
)
async def test_a_version_number_past_the_database_integers_is_a_404_not_a_500(
    admin_http: httpx.AsyncClient, method: str, path: str, params: dict[str, int], body: object
) -> None:
    response = await admin_http.request(method, path, params=params, json=body)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "version_not_found"


async def test_a_refused_deploy_of_such_a_number_is_in_the_audit_log_with_the_number_asked_for(
    admin_http: httpx.AsyncClient,
) -> None:
    response = await admin_http.post("/api/v1/models/m/deploy", json={"version": HUGE})
    assert response.status_code == 404
    # docs/api.md: every management action, refused ones too, leaves one event
    events = (await admin_http.get("/api/v1/models/m/audit")).json()["events"]
    refused = [event for event in events if event["action"] == "deploy"]
    assert len(refused) == 1, events
    assert refused[0]["outcome"] == "denied"
    assert refused[0]["version"] is None
    assert refused[0]["detail"]["version"] == str(HUGE)
