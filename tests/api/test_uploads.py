"""Receiving a project archive: an upload the client abandons halfway."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from modelhost.app import ModelhostApp, create_app
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[ModelhostApp, str]]:
    settings = load_settings(environ={"MODELHOST_HOME": str(tmp_path / "home")})
    app = create_app(settings, backend=FakeBackend())
    key = bootstrap_admin(app.services.repo, settings.home_path, settings.url) or ""
    yield app, key
    await app.services.reconciler.close()
    app.services.repo.engine.dispose()


async def test_an_upload_cut_off_by_the_client_is_a_bad_request_not_a_logged_crash(
    app: tuple[ModelhostApp, str], caplog: pytest.LogCaptureFixture
) -> None:
    asgi, key = app
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/models/cut/versions",
        "raw_path": b"/api/v1/models/cut/versions",
        "query_string": b"file=predict.py&function=predict",
        "headers": [
            (b"host", b"t"),
            (b"content-type", b"application/gzip"),
            (b"content-length", b"100000"),
            (b"authorization", f"Bearer {key}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    messages = iter(
        [
            {"type": "http.request", "body": b"\x1f\x8b" + b"\0" * 50, "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.ERROR):
        await asgi(scope, receive, send)  # raised ClientDisconnect before
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert sent[0]["status"] == 400
    assert b"cut off" in sent[1]["body"]
    assert asgi.services.repo.find_model("cut") is None
