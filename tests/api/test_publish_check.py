"""``POST /api/v1/models/{model}/versions?check=true``: a publish checked before its project is
packed and uploaded (docs/api.md, publish)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio

VERSIONS = "/api/v1/models/{}/versions"


async def test_a_publish_that_would_be_accepted_checks_as_204_and_makes_nothing(
    admin_http: httpx.AsyncClient,
) -> None:
    params = {"file": "calc.py", "function": "add", "check": "true"}
    response = await admin_http.post(VERSIONS.format("fresh"), params=params)
    assert response.status_code == 204, response.text
    assert response.content == b""
    # nothing was made: not the model, not a version of an existing one
    assert (await admin_http.get("/api/v1/models/fresh")).status_code == 404
    response = await admin_http.post(VERSIONS.format("m"), params=params)
    assert response.status_code == 204, response.text
    versions = (await admin_http.get("/api/v1/models/m/versions")).json()["versions"]
    assert [v["number"] for v in versions] == [1]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"environment": "Not One!"}, "is not an environment"),
        ({"batch_max_wait_ms": "5"}, "batch_max_wait_ms needs batch_max_size"),
        ({"function": "not a name"}, "not a valid function name"),
    ],
)
async def test_a_publish_that_would_be_refused_checks_as_the_same_error(
    admin_http: httpx.AsyncClient, params: dict[str, str], fragment: str
) -> None:
    query = {"file": "calc.py", "function": "add", **params}
    checked = await admin_http.post(VERSIONS.format("m"), params={**query, "check": "true"})
    assert checked.status_code == 400, checked.text
    assert fragment in checked.json()["error"]["message"]
