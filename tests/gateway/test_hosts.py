"""Requests for a host name the server does not answer to are refused (DNS rebinding)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from modelhost.gateway.app import Receive, Scope, Send
from modelhost.gateway.hosts import HostGuard, host_name
from modelhost.settings import load_settings

pytestmark = pytest.mark.anyio


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    guard = HostGuard(_ok, ["localhost", "127.0.0.1", "[::1]", "models.example.com"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guard), base_url="http://127.0.0.1:8000"
    ) as client:
        yield client


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000", "models.example.com:443"],
)
async def test_an_allowed_host_name_passes_on_any_port(http: httpx.AsyncClient, host: str) -> None:
    response = await http.get("/models/m/latest/model", headers={"Host": host})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/models/m/latest/model", "/api/v1/models", "/ui/"])
async def test_a_foreign_host_name_gets_400_in_the_error_envelope_naming_the_setting(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.get(path, headers={"Host": "attacker.example:8000"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "bad_request"
    assert "attacker.example" in body["error"]["message"]
    assert "allowed_hosts" in body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]


async def test_a_star_allows_any_host_name() -> None:
    guard = HostGuard(_ok, ["*"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guard), base_url="http://anything.example"
    ) as client:
        assert (await client.get("/")).status_code == 200


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("Example.COM:8000", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:8000", "[::1]"),
        ("::1", "[::1]"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_the_host_name_is_read_without_port_case_or_trailing_dot(value: str, name: str) -> None:
    assert host_name(value) == name


def test_by_default_the_served_host_the_public_url_and_local_names_are_allowed() -> None:
    settings = load_settings(
        {"host": "10.1.2.3", "public_url": "https://models.example.com/"}, environ={}
    )
    assert set(settings.allowed_host_names) == {
        "localhost",
        "127.0.0.1",
        "[::1]",
        "10.1.2.3",
        "models.example.com",
    }


def test_allowed_hosts_when_given_replaces_the_default() -> None:
    settings = load_settings({"allowed_hosts": "a.example, b.example"}, environ={})
    assert settings.allowed_host_names == ("a.example", "b.example")


async def test_a_request_passed_on_by_another_server_process_is_not_checked_again() -> None:
    guard = HostGuard(_ok, ["models.example.com"])
    statuses = []

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    for client in (None, ("127.0.0.1", 5000)):  # no address: the server's private Unix socket
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"host", b"modelhost")],
            "client": client,
        }
        await guard(scope, receive, send)
    assert statuses == [200, 400]


def test_a_call_started_directly_is_offered_only_for_an_allowed_host() -> None:
    offered: list[bytes | None] = []

    def start(scope: Scope, cycle: object, run: object) -> bool:
        offered.append(dict(scope["headers"]).get(b"host"))
        return True

    guard = HostGuard(_ok, ["localhost", "models.example.com"])
    direct = guard.direct(start)
    for host, taken in [
        (b"localhost:8000", True),
        (b"MODELS.example.com", True),
        (b"evil.example.net", False),  # declined: the app refuses it, as any other request
        (None, True),  # HTTP/1.0 without a Host: as the app lets it through
    ]:
        headers = [(b"content-type", b"application/json")]
        if host is not None:
            headers.insert(0, (b"host", host))
        assert direct({"headers": headers}, None, None) is taken, host  # type: ignore[arg-type]
    assert offered == [b"localhost:8000", b"MODELS.example.com", None]
    anywhere = HostGuard(_ok, ["*"]).direct(start)
    assert anywhere({"headers": [(b"host", b"evil.example.net")]}, None, None) is True  # type: ignore[arg-type]
