"""Version numbers a model does not have, in paths, queries and bodies: always a 404."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelhost.app import create_app
from modelhost.operations.accounts import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import PROJECTS

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(environ={"MODELHOST_HOME": str(tmp_path / "home")})
    app = create_app(settings, backend=FakeBackend())
    key = bootstrap_admin(app.services.repo, settings.home_path, settings.url) or ""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(PROJECTS / "calc" / "calc.py", arcname="calc.py")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        published = await client.post(
            "/api/v1/models/m/versions",
            params={"file": "calc.py", "function": "add"},
            content=buffer.getvalue(),
            headers={"Content-Type": "application/gzip"},
        )
        assert published.status_code == 201, published.text
        yield client
    await app.services.reconciler.close()
    app.services.repo.engine.dispose()


async def test_logs_of_a_version_that_does_not_exist_are_a_404_not_an_empty_list(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/api/v1/models/m/logs", params={"version": 1})).status_code == 200
    response = await http.get("/api/v1/models/m/logs", params={"version": 9})
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
    http: httpx.AsyncClient, method: str, path: str, params: dict[str, int], body: object
) -> None:
    response = await http.request(method, path, params=params, json=body)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "version_not_found"
