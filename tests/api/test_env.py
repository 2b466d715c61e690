"""Environment variables of a model over the API (``PUT /api/v1/models/{model}/env/{name}``)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("secret", [False, True])
async def test_a_value_with_a_nul_character_is_refused_and_nothing_is_stored(
    admin_http: httpx.AsyncClient, secret: bool
) -> None:
    response = await admin_http.put(
        "/api/v1/models/m/env/X", json={"value": "a\x00b", "secret": secret}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"
    assert "NUL character" in response.json()["error"]["message"]
    assert "X" in response.json()["error"]["message"]
    listed = await admin_http.get("/api/v1/models/m/env")
    assert listed.json() == {"variables": []}


async def test_a_value_without_a_nul_character_is_stored(admin_http: httpx.AsyncClient) -> None:
    response = await admin_http.put("/api/v1/models/m/env/X", json={"value": "a b\tc\n"})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "X", "secret": False}
    listed = (await admin_http.get("/api/v1/models/m/env")).json()["variables"]
    assert [(v["name"], v["value"]) for v in listed] == [("X", "a b\tc\n")]


async def test_a_name_with_a_trailing_newline_is_refused(admin_http: httpx.AsyncClient) -> None:
    response = await admin_http.put("/api/v1/models/m/env/X%0A", json={"value": "v"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"
    assert "is not a valid variable name" in response.json()["error"]["message"]
    assert (await admin_http.get("/api/v1/models/m/env")).json() == {"variables": []}
