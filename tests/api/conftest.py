"""Shared fixtures of the in-process API tests."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelhost.app import create_app
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import PROJECTS


@pytest.fixture
async def admin_http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process with a fake backend, signed in as the admin, with model m published."""
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
