"""Helpers for the UI tests: a real session cookie for a user, without the sign-in form, and a
headless Chromium (Debian's) for the browser tests."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from modelhost.crypto import ServerKey
from modelhost.ui import session
from tests.helpers import ROOT

CSRF = "test-csrf-token"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "test-artifacts" / "ui"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module (Debian's: nothing is downloaded)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"The browser tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium"
        )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def shot(page: Page, name: str) -> None:
    """A full-page screenshot in test-artifacts/ui, to look at when a test fails."""
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def session_cookies(home: Path, api_key: str) -> dict[str, str]:
    """The cookies a browser holds after signing in with ``api_key``'s account."""
    payload = json.dumps({"key": api_key, "at": int(time.time())})
    return {session.SESSION_COOKIE: ServerKey(home).encrypt(payload), session.CSRF_COOKIE: CSRF}


def sign_in_with_key(page: Page, api_key: str) -> None:
    """Sign the page's browser in with an API key, from the models list, as a user would."""
    page.set_default_timeout(30_000)
    page.goto("/ui/models")
    page.get_by_text("Sign in with an API key instead").click()
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in with the key").click()
    expect(page).to_have_url(re.compile(r"/ui/models$"))
