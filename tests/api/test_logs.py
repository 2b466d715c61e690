"""Reading a model's instance logs: what a wrong version number or tail gets."""

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
