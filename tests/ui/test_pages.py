"""What the pages of a signed-in user say around their content: the footer, the headers, and the
error page for a bad value in the URL. In process, against the whole app with one published
version of ``calc``."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelhost import __version__
from modelhost.app import ModelhostApp, create_app
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import calc_archive
from tests.ui.conftest import CSRF, session_cookies

pytestmark = pytest.mark.anyio


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[ModelhostApp]:
    settings = load_settings(environ={"MODELHOST_HOME": str(tmp_path)})
    application = create_app(settings, backend=FakeBackend())
    key = bootstrap_admin(application.services.repo, tmp_path, settings.url) or ""
    application.admin_key = key  # type: ignore[attr-defined]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application),
        base_url="http://t",
        headers={"Authorization": f"Bearer {key}"},
    ) as http:
        published = await http.post(
            "/api/v1/models/calc/versions",
            params={"file": "calc.py", "function": "add"},
            content=calc_archive(),
            headers={"Content-Type": "application/gzip"},
        )
        assert published.status_code == 201, published.text
    await application.services.reconciler.reconcile_once()
    yield application
    await application.services.reconciler.close()
    application.services.repo.engine.dispose()


def _signed_in(app: ModelhostApp) -> httpx.AsyncClient:
    cookies = session_cookies(Path(app.services.settings.home), app.admin_key)  # type: ignore[attr-defined]
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", cookies=cookies
    )


def _footer(html: str) -> str:
    found = re.search(r"<footer>(.*?)</footer>", html, re.DOTALL)
    assert found is not None, html
    return found.group(1).strip()


@pytest.mark.parametrize(
    "path",
    ["/ui/models/calc/versions/1", "/ui/models/calc/drift", "/ui/models/calc/drift?version=1"],
)
async def test_the_footer_names_the_product_version_even_on_pages_about_a_version(
    app: ModelhostApp, path: str
) -> None:
    async with _signed_in(app) as http:
        page = await http.get(path)
    assert page.status_code == 200, page.text
    assert _footer(page.text) == f"modelhost {__version__}"
    assert "interpreter" not in page.text


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        (
            "/ui/models/calc/versions/abc",
            404,
            "its {number} part, 'abc', is not valid",
        ),
        ("/ui/models/calc/drift?version=abc", 400, "The query parameter version=abc is not valid"),
    ],
)
async def test_a_value_in_the_url_that_is_not_a_number_is_an_error_page_naming_it(
    app: ModelhostApp, path: str, status: int, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with _signed_in(app) as http:
        page = await http.get(path)
        twin = await http.get(path, headers={"Accept": "application/json"})
    assert page.status_code == status
    assert words in html.unescape(page.text)
    assert page.headers["x-request-id"] in page.text
    assert twin.status_code == status
    assert words in twin.json()["error"]["message"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_tester_call_with_an_async_flag_that_is_not_a_boolean_is_a_400(
    app: ModelhostApp,
) -> None:
    async with _signed_in(app) as http:
        answer = await http.post(
            "/ui/models/calc/test",
            params={"route": "latest", "async": "maybe"},
            json={"data": {"x": 1, "y": 2}},
            headers={"X-CSRF-Token": CSRF, "Accept": "application/json"},
        )
    assert answer.status_code == 400, answer.text
    assert "The query parameter async=maybe is not valid" in answer.json()["error"]["message"]


async def test_a_signed_in_users_pages_are_not_stored_so_back_after_sign_out_shows_none(
    app: ModelhostApp,
) -> None:
    async with _signed_in(app) as http:
        for path in (
            "/ui/models",
            "/ui/models/calc",
            "/ui/models/calc/versions/1",
            "/ui/models/calc/settings",
            "/ui/models/calc/instances",
            "/ui/audit",
            "/ui/models/nope",
        ):
            for accept in ("text/html", "application/json"):
                page = await http.get(path, headers={"Accept": accept})
                assert page.headers.get("cache-control") == "no-store", (path, accept)
        static = await http.get("/ui/static/ui.css")
        assert static.status_code == 200
        assert "no-store" not in static.headers.get("cache-control", "")


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def _says(page: httpx.Response, status: int, words: str) -> None:
    assert page.status_code == status, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert words in html.unescape(page.text)
    assert f"Status {status}" in page.text
    assert page.headers["x-request-id"] in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_an_unknown_ui_page_is_an_error_page_for_a_browser_and_the_envelope_otherwise(
    app: ModelhostApp,
) -> None:
    async with _signed_in(app) as http:
        for path in ("/ui/nonexistent", "/ui/models/calc/versions/1/extra"):
            page = await http.get(path, headers=BROWSER)
            _says(page, 404, f"There is no page {path} in the web UI")
            twin = await http.get(path, headers={"Accept": "application/json"})
            assert twin.status_code == 404
            assert twin.json()["error"]["code"] == "not_found"
        api = await http.get("/api/v1/nonexistent", headers=BROWSER)
        assert api.status_code == 404
        assert api.json()["error"]["code"] == "not_found"


async def test_opening_a_forms_action_address_is_a_405_error_page_for_a_browser(
    app: ModelhostApp,
) -> None:
    async with _signed_in(app) as http:
        page = await http.get("/ui/models/calc/actions/rollback", headers=BROWSER)
        _says(page, 405, "is where a form is sent, not a page to open")
        assert page.headers["allow"] == "POST"
        twin = await http.get(
            "/ui/models/calc/actions/rollback", headers={"Accept": "application/json"}
        )
        assert twin.status_code == 405
        assert twin.json()["error"]["code"] == "method_not_allowed"


async def test_a_form_over_the_body_limit_is_a_413_error_page_for_a_browser(
    app: ModelhostApp,
) -> None:
    limit = app.services.settings.max_api_body_bytes
    form = {"csrf_token": CSRF, "name": "BIG", "value": "x" * (limit + 1)}
    async with _signed_in(app) as http:
        page = await http.post("/ui/models/calc/actions/env-set", data=form, headers=BROWSER)
        _says(page, 413, f"The request body is over {limit} bytes")
        twin = await http.post(
            "/ui/models/calc/actions/env-set",
            data=form,
            headers={"Accept": "application/json", "X-CSRF-Token": CSRF},
        )
        assert twin.status_code == 413
        assert twin.json()["error"]["code"] == "payload_too_large"
