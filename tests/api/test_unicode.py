"""Text that is not valid Unicode (a lone UTF-16 surrogate, which JSON can spell as \\ud800)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio

LONE = '"zz-\\ud800"'  # JSON text; json.loads makes it a str Python cannot encode as UTF-8


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/models", '{"name": ' + LONE + "}"),
        ("PATCH", "/api/v1/models/m", '{"description": ' + LONE + "}"),
    ],
)
async def test_a_lone_surrogate_in_a_body_is_a_400_not_a_500(
    admin_http: httpx.AsyncClient, method: str, path: str, body: str
) -> None:
    response = await admin_http.request(
        method, path, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"
    assert "not valid Unicode" in response.json()["error"]["message"] or (
        "not a valid model name" in response.json()["error"]["message"]
    )
