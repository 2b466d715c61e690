"""``modelhost audit`` against the real app in process: ``--since`` takes what captures take."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from click.testing import CliRunner

from modelhost.app import create_app
from modelhost.cli import cli
from modelhost.client import Client
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import PROJECTS


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI's client talks to the app in process, where the admin published model m."""
    from modelhost.cli.connection import Connection

    settings = load_settings(environ={"MODELHOST_HOME": str(tmp_path / "home")})
    app = create_app(settings, backend=FakeBackend())
    key = bootstrap_admin(app.services.repo, settings.home_path, settings.url) or ""

    async def send(method: str, url: str, headers: httpx.Headers, body: bytes) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as asgi:
            answer = await asgi.request(method, url, headers=headers, content=body)
            await answer.aread()
            return answer

    with start_blocking_portal() as portal:

        def forward(request: httpx.Request) -> httpx.Response:
            answer = portal.call(
                send, request.method, str(request.url), request.headers, request.read()
            )
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )

        client = Client("http://t", key, transport=httpx.MockTransport(forward))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(PROJECTS / "calc" / "calc.py", arcname="calc.py")
        published = portal.call(
            send,
            "POST",
            "/api/v1/models/m/versions?file=calc.py&function=add",
            httpx.Headers({"Content-Type": "application/gzip", "Authorization": f"Bearer {key}"}),
            buffer.getvalue(),
        )
        assert published.status_code == 201, published.text
        monkeypatch.setattr(Connection, "client", property(lambda _self: client))
        yield
        client.close()
        portal.call(app.services.reconciler.close)
    app.services.repo.engine.dispose()


@pytest.mark.parametrize("since", ["24h", "7d", "2000-01-01"])
def test_audit_since_a_time_back_from_now_or_a_date_lists_the_events(
    server: None, since: str
) -> None:
    result = CliRunner().invoke(cli, ["audit", "m", "--since", since])
    assert result.exit_code == 0, result.output
    assert " publish " in result.output


def test_audit_since_something_that_is_not_a_time_is_one_error_line_saying_what_to_give(
    server: None,
) -> None:
    result = CliRunner().invoke(cli, ["audit", "m", "--since", "yesterday"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: since 'yesterday' is not a time; give a date or time such as 2026-12-01 or "
        "2026-12-01T09:30Z, or a time back from now such as 90m, 24h or 7d."
    ]
