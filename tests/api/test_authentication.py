"""Every route needs an API key unless it is on the explicit allowlist."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from modelhost import urls
from modelhost.app import ROUTERS, ModelhostApp, create_app
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend

pytestmark = pytest.mark.anyio

#: The only routes anyone may call without a key; adding one here is a security decision.
ALLOWLIST = {
    ("GET", "/health"),
    ("GET", "/"),
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/login"),  # signing in is how one gets a key
    ("GET", "/favicon.ico"),  # the web UI's icon, which browsers ask for before signing in
}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[ModelhostApp]:
    settings = load_settings(environ={"MODELHOST_HOME": str(tmp_path)})
    application = create_app(settings, backend=FakeBackend())
    application.key = bootstrap_admin(  # type: ignore[attr-defined]
        application.services.repo, tmp_path, settings.url
    )
    yield application
    application.services.repo.engine.dispose()


def _routes() -> list[tuple[str, str]]:
    found = [("GET", urls.OPENAPI)]
    for prefix, router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                found.append((method, prefix + route.path))
    return found


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1) == "number" else "some-model", path)


async def test_every_route_without_a_key_is_refused_unless_allowlisted(
    app: ModelhostApp,
) -> None:
    routes = _routes()
    assert len(routes) >= 10
    assert set(routes) >= ALLOWLIST
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        for method, path in routes:
            response = await http.request(method, _concrete(path))
            if (method, path) in ALLOWLIST:
                assert response.status_code in (200, 400), (method, path, response.text)
                continue
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
            assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("Bearer mh_wrong", "not valid or was revoked"),
        ("Bearer sk-not-ours", "not a modelhost API key"),
        ("Basic dXNlcjpwYXNz", "needs an API key"),
    ],
)
async def test_a_wrong_key_is_refused_with_a_message_saying_why(
    app: ModelhostApp, header: str, fragment: str
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        response = await http.get("/api/v1/models", headers={"Authorization": header})
    assert response.status_code == 401
    assert fragment in response.json()["error"]["message"]


async def test_the_right_key_is_accepted_and_says_who_it_belongs_to(app: ModelhostApp) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {app.key}"},
    ) as http:  # type: ignore[attr-defined]
        me = await http.get("/api/v1/me")
    assert me.json()["username"] == "admin"
    assert me.json()["is_admin"] is True


async def test_every_documented_route_has_a_summary() -> None:
    for _prefix, router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            assert route.summary or not route.include_in_schema, route.path


async def test_the_openapi_document_is_served_at_its_stable_url(app: ModelhostApp) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        schema = (await http.get("/api/v1/openapi.json")).json()
    assert schema["info"]["title"] == "modelhost"
    assert "/api/v1/models/{model}/versions" in schema["paths"]


async def test_routers_list_covers_every_route_the_openapi_document_has(
    app: ModelhostApp,
) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in app.api.openapi()["paths"].items()
        for method in operations
    }
    assert documented <= set(_routes())
