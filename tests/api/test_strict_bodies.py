"""Request bodies of the management API are read strictly: a value of another JSON type, or a
field the route does not have, is ``400 bad_request`` naming the field (docs/api.md)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/v1/models/m/deploy", {"version": True}, "version"),
        ("POST", "/api/v1/models/m/deploy", {"version": "1"}, "version"),
        ("POST", "/api/v1/models/m/deploy", {"version": 1.0}, "version"),
        ("PUT", "/api/v1/models/m/labels/prod", {"version": True}, "version"),
        ("PATCH", "/api/v1/models/m", {"instance_count": True}, "instance_count"),
        ("PATCH", "/api/v1/models/m", {"log_requests": "yes"}, "log_requests"),
        ("PATCH", "/api/v1/models/m", {"log_requests": 1}, "log_requests"),
        ("PATCH", "/api/v1/models/m", {"timeout_seconds": True}, "timeout_seconds"),
        ("PUT", "/api/v1/models/m/env/X", {"value": "x", "secret": "yes"}, "secret"),
        ("PATCH", "/api/v1/models/m/versions/1", {"batch_max_size": True}, "batch_max_size"),
        ("PATCH", "/api/v1/models/m/versions/1", {"batch_max_size": "8"}, "batch_max_size"),
    ],
)
async def test_a_value_of_another_json_type_is_a_400_naming_the_field_and_changes_nothing(
    admin_http: httpx.AsyncClient, method: str, path: str, body: object, field: str
) -> None:
    before = (await admin_http.get("/api/v1/models/m")).json()
    response = await admin_http.request(method, path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert error["message"].startswith(f"Invalid request: {field}: "), error["message"]
    assert (await admin_http.get("/api/v1/models/m")).json() == before
    assert (await admin_http.get("/api/v1/models/m/env")).json() == {"variables": []}


async def test_an_unknown_field_is_a_400_naming_it_and_the_known_ones(
    admin_http: httpx.AsyncClient,
) -> None:
    before = (await admin_http.get("/api/v1/models/m")).json()
    response = await admin_http.patch("/api/v1/models/m", json={"instances": 3})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert error["message"].startswith("Invalid request: Unknown field 'instances'; the fields ")
    assert "instance_count" in error["message"]
    assert (await admin_http.get("/api/v1/models/m")).json() == before


async def test_an_unknown_field_next_to_a_valid_one_changes_nothing(
    admin_http: httpx.AsyncClient,
) -> None:
    response = await admin_http.put("/api/v1/models/m/env/X", json={"value": "x", "secrets": True})
    assert response.status_code == 400, response.text
    assert "Unknown field 'secrets'" in response.json()["error"]["message"]
    assert (await admin_http.get("/api/v1/models/m/env")).json() == {"variables": []}


async def test_valid_bodies_still_work_and_an_integer_is_a_number(
    admin_http: httpx.AsyncClient,
) -> None:
    response = await admin_http.patch(
        "/api/v1/models/m",
        json={"instance_count": 2, "timeout_seconds": 5, "log_requests": True, "capture_share": 1},
    )
    assert response.status_code == 200, response.text
    assert response.json()["instance_count"] == 2
    assert response.json()["timeout_seconds"] == 5
    assert response.json()["log_requests"] is True
    # version 1 is still building with the fake backend: the body was read as version 1
    deployed = await admin_http.post("/api/v1/models/m/deploy", json={"version": 1})
    assert deployed.status_code == 409, deployed.text
    assert "Version 1 of 'm' is still building" in deployed.json()["error"]["message"]
    batch = await admin_http.patch("/api/v1/models/m/versions/1", json={"batch_max_wait_ms": 5})
    assert "was not published as a batching function" in batch.json()["error"]["message"]
    # docs/api.md: the way out, for the CLI and for the API and client alike
    assert "(--batch-max-size; batch_max_size in the API and the Python client)" in batch.text
    stopped = await admin_http.post("/api/v1/models/m/stop")
    assert stopped.status_code == 200, stopped.text
    secret = await admin_http.put("/api/v1/models/m/env/X", json={"value": "x", "secret": True})
    assert secret.json() == {"name": "X", "secret": True}
