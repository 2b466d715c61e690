"""Signing in and out, the cookies' flags, CSRF, redirects, error pages and the JSON twin,
in process against the whole app."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelhost.app import ModelhostApp, create_app
from modelhost.operations import access_control
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from modelhost.ui import session
from tests.fakes import FakeBackend
from tests.ui.conftest import CSRF, session_cookies
from tests.ui.test_permissions import ACTION_NEEDS, UI_ROUTE_NEEDS

pytestmark = pytest.mark.anyio
PASSWORD = "alice-password"


async def _app(home: Path, **environ: str) -> ModelhostApp:
    settings = load_settings(environ={"MODELHOST_HOME": str(home), **environ})
    app = create_app(settings, backend=FakeBackend())
    app.admin_key = bootstrap_admin(app.services.repo, home, settings.url)  # type: ignore[attr-defined]
    access_control.add_user(
        app.services,
        app.services.repo.find_user("admin"),  # type: ignore[arg-type]
        "alice",
        PASSWORD,
        is_admin=False,
    )
    return app


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[ModelhostApp]:
    application = await _app(tmp_path)
    yield application
    await application.services.reconciler.close()
    application.services.repo.engine.dispose()


def _browser(app: ModelhostApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def _sign_in(http: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    await http.get("/ui/sign-in")
    return await http.post(
        "/ui/sign-in",
        data={
            "username": "alice",
            "password": password,
            "next": "/ui/models",
            "csrf_token": http.cookies[session.CSRF_COOKIE],
        },
    )


async def test_signing_in_sets_an_httponly_samesite_session_cookie_and_goes_on(
    app: ModelhostApp,
) -> None:
    async with _browser(app) as http:
        response = await _sign_in(http)
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/models"
        cookie = next(
            c for c in response.headers.get_list("set-cookie") if c.startswith("mh_session=")
        )
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Secure" not in cookie  # the server's URL is http
        page = await http.get("/ui/models")
        assert page.status_code == 200
        assert "alice" in page.text
    keys = app.services.repo.list_api_keys(app.services.repo.find_user("alice").id)  # type: ignore[union-attr]
    assert [(k.name, k.expires_at is not None) for k in keys] == [("web session", True)]


async def test_the_session_cookie_is_secure_when_the_public_url_is_https(tmp_path: Path) -> None:
    application = await _app(tmp_path, MODELHOST_PUBLIC_URL="https://models.example.com")
    try:
        async with _browser(application) as http:
            response = await _sign_in(http)
        cookies = response.headers.get_list("set-cookie")
        assert all("Secure" in c for c in cookies), cookies
    finally:
        application.services.repo.engine.dispose()


async def test_a_wrong_password_is_said_in_plain_words_and_throttled(app: ModelhostApp) -> None:
    access_control.LOGIN_THROTTLE._failures.clear()
    async with _browser(app) as http:
        for _ in range(5):
            wrong = await _sign_in(http, "not-the-password")
            assert wrong.status_code == 401
            assert "The user name or password is wrong." in wrong.text
        throttled = await _sign_in(http)
        assert throttled.status_code == 429
        assert "Too many failed attempts" in throttled.text
    access_control.LOGIN_THROTTLE._failures.clear()


async def test_the_first_admin_signs_in_with_the_api_key_and_gets_a_key_of_its_own(
    app: ModelhostApp,
) -> None:
    async with _browser(app) as http:
        await http.get("/ui/sign-in")
        response = await http.post(
            "/ui/sign-in",
            data={"api_key": app.admin_key, "csrf_token": http.cookies[session.CSRF_COOKIE]},  # type: ignore[attr-defined]
        )
        assert response.status_code == 303
        page = await http.get("/ui/audit")
        assert page.status_code == 200
        assert "admin (admin)" in page.text
        bad = await http.post(
            "/ui/sign-in",
            data={"api_key": "mh_wrong", "csrf_token": http.cookies[session.CSRF_COOKIE]},
        )
        assert bad.status_code == 401
        assert "not valid or was revoked" in bad.text


async def test_signing_out_revokes_the_sessions_key_so_the_old_cookie_stops_working(
    app: ModelhostApp,
) -> None:
    async with _browser(app) as http:
        await _sign_in(http)
        old = dict(http.cookies)
        out = await http.post(
            "/ui/sign-out", data={"csrf_token": http.cookies[session.CSRF_COOKIE]}
        )
        assert out.status_code == 303
        assert out.headers["location"] == "/ui/sign-in"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", cookies=old
    ) as replay:
        again = await replay.get("/ui/models")
        assert again.status_code == 303
        assert again.headers["location"].startswith("/ui/sign-in")


async def test_every_form_without_the_csrf_token_is_refused(app: ModelhostApp) -> None:
    cookies = session_cookies(Path(app.services.settings.home), app.admin_key)  # type: ignore[attr-defined]
    posts = [p for (m, p) in UI_ROUTE_NEEDS if m == "POST"]
    posts += [f"/ui/models/m/actions/{what}" for what in ACTION_NEEDS]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", cookies=cookies
    ) as http:
        for path in posts:
            for token in (None, "wrong"):
                data = {"csrf_token": token} if token else {}
                response = await http.post(path, data=data)
                assert response.status_code == 403, (path, response.text)
                assert "CSRF check failed" in response.text
        header = await http.post(
            "/ui/models/m/actions/rollback",
            headers={"X-CSRF-Token": CSRF, "Accept": "application/json"},
        )
        assert header.json()["error"]["code"] == "model_not_found"  # past the CSRF check


async def test_pages_without_a_session_redirect_to_sign_in_and_come_back(
    app: ModelhostApp,
) -> None:
    async with _browser(app) as http:
        for (method, path), need in UI_ROUTE_NEEDS.items():
            if method != "GET" or need == "public":
                continue
            concrete = path.replace("{model}", "m").replace("{number}", "1")
            concrete = concrete.replace("{prediction_id}", "p1")
            response = await http.get(concrete)
            assert response.status_code == 303, concrete
            assert response.headers["location"] == f"/ui/sign-in?next={concrete}"
        json_twin = await http.get("/ui/models", headers={"Accept": "application/json"})
        assert json_twin.status_code == 401
        assert json_twin.json()["error"]["code"] == "unauthenticated"


async def test_sign_in_only_goes_on_to_pages_of_the_ui(app: ModelhostApp) -> None:
    async with _browser(app) as http:
        await http.get("/ui/sign-in")
        for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/models"):
            response = await http.post(
                "/ui/sign-in",
                data={
                    "username": "alice",
                    "password": PASSWORD,
                    "next": target,
                    "csrf_token": http.cookies[session.CSRF_COOKIE],
                },
            )
            assert response.headers["location"] == "/ui/models", target


async def test_a_browser_at_the_root_is_sent_to_the_ui_and_an_api_client_is_not(
    app: ModelhostApp,
) -> None:
    async with _browser(app) as http:
        browser = await http.get("/", headers={"Accept": "text/html,*/*"})
        assert browser.status_code == 303
        assert browser.headers["location"] == "/ui/"
        api = await http.get("/")
        assert api.json()["api"] == "/api/v1"
        static = await http.get("/ui/static/ui.css")
        assert static.status_code == 200
        assert "text/css" in static.headers["content-type"]


async def test_an_unknown_model_is_a_plain_words_error_page_or_the_envelope(
    app: ModelhostApp,
) -> None:
    cookies = session_cookies(Path(app.services.settings.home), app.admin_key)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", cookies=cookies
    ) as http:
        page = await http.get("/ui/models/nope")
        assert page.status_code == 404
        assert re.search(r"There is no model (&#39;|')nope", page.text)
        twin = await http.get("/ui/models/nope", headers={"Accept": "application/json"})
        assert twin.json()["error"]["code"] == "model_not_found"
        audit = await http.get("/ui/audit", params={"since": "yesterday"})
        assert audit.status_code == 400
        assert "is not a date" in audit.text


async def test_every_ui_page_forbids_framing_and_loads_only_from_this_server(
    app: ModelhostApp,
) -> None:
    async with _browser(app) as http:
        for path in ("/ui/sign-in", "/ui/models", "/ui/static/ui.css"):
            response = await http.get(path)
            policy = response.headers["content-security-policy"]
            assert "default-src 'self'" in policy, path
            assert "frame-ancestors 'none'" in policy, path
            assert response.headers["x-frame-options"] == "DENY", path


async def test_ui_templates_have_no_inline_script_style_or_third_party_url() -> None:
    templates = Path(session.__file__).parent / "templates"
    for template in templates.rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template
        assert "<style" not in text, template
        assert not re.search(r"\sstyle=", text), template
        assert not re.search(r"\son[a-z]+=", text), template
        assert not re.search(r"(src|href)=\"(https?:)?//", text), template


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://attacker.example"},
        {"Origin": "null"},
        {"Origin": "http://t.attacker.example"},
        {"Referer": "https://attacker.example/page"},
    ],
)
async def test_a_form_sent_from_another_site_is_refused_even_with_a_valid_csrf_token(
    app: ModelhostApp, headers: dict[str, str]
) -> None:
    cookies = session_cookies(Path(app.services.settings.home), app.admin_key)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", cookies=cookies
    ) as http:
        response = await http.post(
            "/ui/models/m/actions/rollback", data={"csrf_token": CSRF}, headers=headers
        )
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"
        assert "another site" in response.json()["error"]["message"]
        assert response.headers["x-frame-options"] == "DENY"
        signed_in = await _sign_in_from(http, headers)
        assert signed_in.status_code == 403


async def _sign_in_from(http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    await http.get("/ui/sign-in")
    return await http.post(
        "/ui/sign-in",
        data={
            "username": "alice",
            "password": PASSWORD,
            "next": "/ui/models",
            "csrf_token": http.cookies[session.CSRF_COOKIE],
        },
        headers=headers,
    )


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://t"}, {"Referer": "http://t/ui/models/m/versions"}, {}],
    ids=["same-origin", "same-referer", "neither"],
)
async def test_a_form_sent_from_this_server_or_without_origin_goes_on(
    app: ModelhostApp, headers: dict[str, str]
) -> None:
    async with _browser(app) as http:
        response = await _sign_in_from(http, headers)
        assert response.status_code == 303, response.text


async def test_a_form_from_the_public_url_passes_when_a_proxy_sends_another_host(
    tmp_path: Path,
) -> None:
    application = await _app(tmp_path, MODELHOST_PUBLIC_URL="https://models.example.com")
    try:
        async with httpx.AsyncClient(  # the proxy's own address; the cookies are Secure
            transport=httpx.ASGITransport(app=application), base_url="https://127.0.0.1:8000"
        ) as http:
            response = await _sign_in_from(http, {"Origin": "https://models.example.com"})
            assert response.status_code == 303, response.text
    finally:
        application.services.repo.engine.dispose()
