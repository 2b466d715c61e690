"""The metrics page and the request log in real headless Chromium against a real server that is
restarted between the calls and the browser: the charts and the table show calls made before
the restart, over the range the chooser picks, and the instances page lists the last calls."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from tests.helpers import PROJECTS, running_server, wait_until
from tests.ui.conftest import sign_in_with_key

pytestmark = pytest.mark.integration


def test_the_charts_and_the_request_log_show_calls_made_before_a_restart(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("ui-metrics") / "home"
    with running_server(home) as server:
        client = server.client()
        client.publish(PROJECTS / "calc", file="calc.py", function="add", name="charted")
        calls: list[int] = []

        def call(data: dict[str, object]) -> int:
            calls.append(server.invoke("charted", {"data": data}).status_code)
            return calls[-1]

        wait_until(lambda: call({"x": 1, "y": 2}) == 200)
        for number in range(6):
            call({"x": 1, "y": number})
        call({"z": 1})
        assert calls[-7:] == [200] * 6 + [400]
        wait_until(lambda: len(client.requests("charted", tail=100)) == len(calls), 15)
    with running_server(home) as again:
        context = browser.new_context(base_url=again.url)
        page = context.new_page()
        sign_in_with_key(page, again.api_key)

        page.goto("/ui/models/charted/metrics")
        chooser = page.get_by_role("navigation", name="Time range")
        expect(chooser.get_by_role("link", name="1h")).to_have_attribute("aria-current", "page")
        row = page.locator("table.metrics tbody tr").first
        expect(row.locator("td").nth(1)).to_have_text(str(len(calls)))
        expect(page.locator("svg.chart")).to_have_count(4)
        chooser.get_by_role("link", name="24h").click()
        expect(page).to_have_url(re.compile(r"range=24h$"))
        expect(page.get_by_text("15 minutes per point")).to_be_visible()
        expect(page.locator("table.metrics tbody tr").first.locator("td").nth(1)).to_have_text(
            str(len(calls))
        )
        expect(page.locator("svg.chart polyline, svg.chart circle").first).to_be_attached()
        chooser.get_by_role("link", name="7d").click()
        expect(page.get_by_text("120 minutes per point")).to_be_visible()
        page.goto("/ui/models/charted/metrics?range=2d")
        expect(page.locator("body")).to_contain_text(
            "Unknown range '2d'; choose one of 1h, 24h, 7d."
        )

        page.goto("/ui/models/charted/instances")
        requests = page.locator("table#requests tbody tr")
        expect(requests).to_have_count(len(calls))
        expect(requests.first).to_contain_text("400")  # newest first
        expect(requests.first).to_contain_text("127.0.0.1")
        context.close()
