"""The overview's tester and snippets, and the API docs page, for a batching version: the body
is one call's input (docs/api.md, "Batching functions": each call's ``data`` object or
``parameters`` array is one element of the function's list of inputs, and each call gets its
own result), and the page says so. A plain version's tester and snippets are as they were. In
process, with the models of ``tests.api.test_batching_documents.batching_app``."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelhost.app import ModelhostApp
from modelhost.ui.snippets import sample_input, snippets
from tests.api.test_batching_documents import batching_app
from tests.ui.conftest import session_cookies

pytestmark = pytest.mark.anyio

JSON = {"Accept": "application/json"}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[ModelhostApp]:
    async with batching_app(tmp_path / "home") as application:
        yield application


def _signed_in(app: ModelhostApp) -> httpx.AsyncClient:
    cookies = session_cookies(Path(app.services.settings.home), app.admin_key)  # type: ignore[attr-defined]
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", cookies=cookies
    )


async def _overview(app: ModelhostApp, model: str) -> tuple[str, dict[str, Any]]:
    """The overview's HTML, as text, and its JSON twin."""
    async with _signed_in(app) as http:
        page = await http.get(f"/ui/models/{model}")
        twin = await http.get(f"/ui/models/{model}", headers=JSON)
    assert page.status_code == 200, page.text
    assert twin.status_code == 200, twin.text
    return _text(page.text), twin.json()


def _text(page: str) -> str:
    """The page's text: tags dropped, entities read, spaces squeezed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def _tester_body(page: str) -> Any:
    found = re.search(r'<textarea id="tester-body"[^>]*>(.*?)</textarea>', page, re.DOTALL)
    assert found is not None, page
    return json.loads(html.unescape(found.group(1)))


def _said(code: str, marker: str) -> str:
    return " ".join(
        line.removeprefix(marker) for line in code.splitlines() if line.startswith(marker)
    )


async def test_a_batching_versions_tester_starts_from_one_input_to_fill_not_the_list_argument(
    app: ModelhostApp,
) -> None:
    async with _signed_in(app) as http:
        page = (await http.get("/ui/models/batch")).text
    # total(inputs): {"data": {"inputs": null}} would send {"inputs": None} as one input
    assert _tester_body(page) == {"data": {}}
    text, twin = await _overview(app, "batch")
    assert twin["sample"] == {"data": {}}
    assert twin["sample_is_skeleton"] is True
    assert twin["sample_batch"] == {"max_size": 8, "max_wait_ms": 5.0}
    assert (
        "total is a batching function: send one call's input. It gets this call's data object "
        "(a dict) or parameters array (a list) as one element of its list of inputs, and the "
        "answer's result is this call's own result."
    ) in text
    assert "At most 8 calls go in one batch." in text
    assert "This body is a placeholder for one call's input" in text
    assert "passes keyword arguments" not in text
    assert "replace each null" not in text


async def test_a_batching_versions_example_is_the_tester_body_and_the_page_still_says_one_input(
    app: ModelhostApp,
) -> None:
    text, twin = await _overview(app, "batch-example")
    assert twin["sample"] == {"parameters": [1, 2]}
    assert twin["sample_is_skeleton"] is False
    assert "as one element of its list of inputs" in text
    assert "placeholder" not in text


async def test_each_snippet_of_a_batching_version_sends_one_input_and_says_so(
    app: ModelhostApp,
) -> None:
    _, twin = await _overview(app, "batch-example")
    code = twin["snippets"]
    assert """-d '{"parameters": [1, 2]}'""" in code["curl"]
    for key, marker in [("curl", "# "), ("python", "# "), ("javascript", "// "), ("r", "# ")]:
        said = _said(code[key], marker)
        assert "total is a batching function: send one call's input." in said, key
        assert "as one element of its list of inputs" in said, key
        assert "this call's own result" in said, key


async def test_an_r_batching_versions_tester_says_its_inputs_are_r_lists(
    app: ModelhostApp,
) -> None:
    text, twin = await _overview(app, "r-batch")
    assert twin["sample"] == {"data": {}}
    assert "data object (a named list) or parameters array (a list)" in text
    assert "data object (a named list)" in _said(twin["snippets"]["r"], "# ")


async def test_a_plain_versions_tester_and_snippets_are_built_from_its_signature_as_before(
    app: ModelhostApp,
) -> None:
    text, twin = await _overview(app, "calc")
    assert twin["sample"] == {"data": {"x": None, "y": None}}
    assert twin["sample_is_skeleton"] is True
    assert twin.get("sample_batch") is None
    body = sample_input("add(x, y)").body
    url = "http://127.0.0.1:8000/models/calc/latest/model"
    assert twin["snippets"] == snippets(url, body, token_required=True)
    assert "passes keyword arguments" in text
    assert "replace each null" in text
    assert "batching" not in text


async def test_the_api_docs_page_of_a_batching_version_shows_one_calls_input(
    app: ModelhostApp,
) -> None:
    async with _signed_in(app) as http:
        page = await http.get("/ui/models/batch/docs")
        twin = await http.get("/ui/models/batch/docs", headers=JSON)
    assert page.status_code == 200, page.text
    text = _text(page.text)
    assert "A batching function: at most 8 calls a batch, waiting at most 5 ms" in text
    assert "`total` gets this object (a dict) as one element of its list of inputs" in text
    assert "`total` gets this array (a list) as one element of its list of inputs" in text
    assert "This call's own result: its element of the list `total` returned." in text
    assert "Keyword arguments" not in text
    assert "Positional arguments" not in text
    assert twin.json()["docs"]["batch"] == {"max_size": 8, "max_wait_ms": 5.0}
    async with _signed_in(app) as http:
        plain = _text((await http.get("/ui/models/calc/docs")).text)
    assert "Keyword arguments" in plain
    assert "batching" not in plain
