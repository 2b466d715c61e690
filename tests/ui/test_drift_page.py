"""Prediction capture in real headless Chromium against a real server: the owner turns capture
on in the settings page, calls are captured, and the drift page, given a reference file, flags
the one shifted feature and draws both histograms of each feature."""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.helpers import PROJECTS, running_server, wait_until
from tests.ui.conftest import sign_in_with_key

pytestmark = pytest.mark.integration

CALLS = 300


def test_the_drift_page_flags_the_shifted_feature_and_draws_its_histograms(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("ui-drift")
    with running_server(work / "home") as server:
        client = server.client()
        client.publish(PROJECTS / "features", file="score.py", function="score", name="drifting")
        context = browser.new_context(base_url=server.url)
        page = context.new_page()
        sign_in_with_key(page, server.api_key)

        page.goto("/ui/models/drifting/settings")
        page.get_by_label("Capture calls' inputs and outputs").check()
        page.get_by_label("Share of calls captured").fill("1")
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.locator("body")).to_contain_text("Settings saved.")
        assert client.model("drifting")["capture"] is True
        assert [e["action"] for e in client.audit("drifting", action="capture-on")] == [
            "capture-on"
        ]

        rng = random.Random(7)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            wait_until(
                lambda: (
                    http.post("/models/drifting/latest/model", json={"data": {"x": 0}}).status_code
                    == 200
                )
            )
            for _ in range(CALLS):
                data = {"x": rng.gauss(3.0, 1.0), "y": rng.gauss(0.0, 1.0)}
                assert http.post("/models/drifting/latest/model", json={"data": data}).is_success
        exported = work / "captured.parquet"

        def written() -> bool:
            client.export_captures("drifting", exported, since="1h")
            import pyarrow.parquet as pq

            return pq.read_metadata(exported).num_rows >= CALLS + 1

        wait_until(written, timeout=30, interval=0.5)

        reference = work / "reference.csv"
        reference_rng = random.Random(8)
        with reference.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["x", "y"])
            for _ in range(2000):
                writer.writerow([reference_rng.gauss(0.0, 1.0), reference_rng.gauss(0.0, 1.0)])

        page.goto("/ui/models/drifting")
        page.get_by_role("navigation", name="Model pages").get_by_role("link", name="Drift").click()
        expect(page).to_have_url(re.compile(r"/ui/models/drifting/drift$"))
        upload = page.locator("form#drift-upload")
        upload.get_by_label("Reference").set_input_files(str(reference))
        upload.get_by_role("button", name="Compare with this file").click()
        report = page.locator("#drift-report")
        expect(report).to_contain_text("Version 1 against the uploaded file")
        shifted = page.locator("table.drift tr[data-feature=x]")
        steady = page.locator("table.drift tr[data-feature=y]")
        expect(shifted).to_have_class(re.compile("drifted"))
        expect(shifted).to_contain_text("drift")
        expect(steady).to_contain_text("stable")
        assert float(shifted.locator("td.psi").inner_text()) > 0.2
        assert float(steady.locator("td.psi").inner_text()) <= 0.2
        histograms = page.locator("svg.histogram")
        expect(histograms).to_have_count(2)
        # ten bins, a reference bar and a captured bar in each
        expect(histograms.first.locator("rect.bar")).to_have_count(20)
        page.screenshot(path=str(Path(work) / "drift.png"), full_page=True)

        page.get_by_role("button", name="Compare with its first day of capture").click()
        expect(page.locator("body")).to_contain_text("only within its first day")
        context.close()
