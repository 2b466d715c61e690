"""At a phone's width (375 px) in real headless Chromium, against a real server, the pages
whose tables used to run off the side of the screen fit it: below 700 px, tables stack into
label/value rows (docs/ui.md)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser

from tests.helpers import PROJECTS, running_server
from tests.ui.conftest import shot, sign_in_with_key

pytestmark = pytest.mark.integration

WIDTH = 375


def test_the_labels_tokens_and_collaborators_tables_fit_a_phone(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running_server(tmp_path_factory.mktemp("ui-phone") / "home") as server:
        client = server.client()
        for _ in range(2):
            client.publish(PROJECTS / "calc", file="calc.py", function="add", name="pocket")
        client.set_label("pocket", "prod", 1)
        client.set_label("pocket", "staging", 1, canary_version=2, canary_weight=10)
        client.create_token("pocket", "a-rather-long-token-name", rate="50/s", quota="100000/day")
        client.add_user("a-collaborator-with-a-long-name", "password-of-the-collaborator")
        client.set_collaborator("pocket", "a-collaborator-with-a-long-name", "editor")
        client.set_env("pocket", "SOME_VARIABLE", "some value")

        context = browser.new_context(
            base_url=server.url, viewport={"width": WIDTH, "height": 740}, is_mobile=True
        )
        page = context.new_page()
        sign_in_with_key(page, server.api_key)
        for path, tables in [
            ("/ui/models/pocket/versions", ["table.labels"]),
            ("/ui/models/pocket/settings", ["table.tokens", "table.collaborators", "table.env"]),
        ]:
            page.goto(path)
            shot(page, "phone-" + path.rsplit("/", 1)[-1])
            for table in tables:
                header = page.locator(f"{table} thead")
                assert header.evaluate("e => getComputedStyle(e).display") == "none", table
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= WIDTH, (path, width)  # nothing runs off the side of the screen
        revoke = page.locator("table.tokens").get_by_role("button", name="Revoke")
        box = revoke.bounding_box()
        assert box is not None
        assert box["x"] + box["width"] <= WIDTH  # on the screen, not in a sideways scroll
        context.close()
