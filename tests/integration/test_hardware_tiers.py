"""Hardware tiers on the local backend, through a real server: a model picks a tier and its
instances get exactly that tier's CPUs (an affinity) and memory (its limit); a tier the machine
cannot satisfy, or that does not exist, is refused with a clear error (docs/scaling.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelhost import errors
from tests.helpers import PROJECTS, Server, running_server, wait_until
from tests.ui.conftest import CSRF, session_cookies

pytestmark = pytest.mark.integration

TIERS = {
    "one": {"cpus": 1, "memory_mb": 150},
    "gpu": {"cpus": 1, "memory_mb": 150, "gpus": 1},
    "wide": {"cpus": len(os.sched_getaffinity(0)) + 1, "memory_mb": 150},
}
PROBE = """\
import os


def probe(hog_mb=0):
    if hog_mb:
        hog = bytearray(hog_mb * 1024 * 1024)
        for i in range(0, len(hog), 4096):
            hog[i] = 1
        import time
        time.sleep(5)
    return {"cores": len(os.sched_getaffinity(0)), "instance": os.environ["MODELHOST_INSTANCE_ID"]}
"""


@pytest.fixture(scope="module")
def tiered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"MODELHOST_HARDWARE_TIERS": json.dumps(TIERS)}
    with running_server(tmp_path_factory.mktemp("tiers") / "home", env) as server:
        yield server


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "probe"
    project.mkdir(exist_ok=True)
    (project / "probe.py").write_text(PROBE)
    return project


def test_a_model_on_a_tier_gets_its_cpus_and_its_memory_limit(
    tiered: Server, tmp_path: Path
) -> None:
    client = tiered.client()
    client.publish(_project(tmp_path) / "probe.py:probe", name="tier-probe")
    untiered = tiered.invoke("tier-probe", {"data": {}}).json()["result"]
    assert untiered["cores"] == len(os.sched_getaffinity(0))
    updated = client.update_model("tier-probe", tier="one")
    assert updated["tier"] == {"name": "one", "cpus": 1.0, "memory_mb": 150, "gpus": 0}
    # the instances restart on the tier, with zero downtime
    wait_until(
        lambda: tiered.invoke("tier-probe", {"data": {}}).json()["result"]["cores"] == 1,
        timeout=60,
    )
    over = tiered.invoke("tier-probe", {"data": {"hog_mb": 300}})
    assert over.status_code == 502
    logs = "\n".join(line["text"] for line in client.logs("tier-probe", tail=1000))
    assert "over the limit of 150 MB (its hardware tier)" in logs
    shown = tiered.cli("models", "update", "tier-probe", "--tier", "", check=True).stdout
    assert "tier none" in shown
    wait_until(
        lambda: (
            tiered.invoke("tier-probe", {"data": {}}).json()["result"]["cores"] > 1
            or len(os.sched_getaffinity(0)) == 1
        ),
        timeout=60,
    )


def test_the_web_ui_shows_the_tier_and_picks_one_in_the_settings_form(
    tiered: Server,
) -> None:
    client = tiered.client()
    client.publish(PROJECTS / "calc" / "calc.py:add", name="tier-ui")
    cookies = session_cookies(tiered.home, tiered.api_key)
    settings_page = httpx.get(f"{tiered.url}/ui/models/tier-ui/settings", cookies=cookies)
    assert settings_page.status_code == 200
    assert '<option value="one">one: 1 CPU, 150 MB</option>' in settings_page.text
    picked = httpx.post(
        f"{tiered.url}/ui/models/tier-ui/actions/settings",
        cookies=cookies,
        headers={"X-CSRF-Token": CSRF, "Accept": "application/json"},
        data={"csrf_token": CSRF, "tier": "one"},
    )
    assert picked.status_code == 200, picked.text
    assert client.model("tier-ui")["tier"]["name"] == "one"
    overview = httpx.get(f"{tiered.url}/ui/models/tier-ui", cookies=cookies)
    assert "Hardware tier <strong>one</strong>: 1 CPU, 150 MB per instance" in overview.text


def test_a_tier_the_machine_cannot_satisfy_or_that_does_not_exist_is_refused(
    tiered: Server,
) -> None:
    client = tiered.client()
    client.publish(PROJECTS / "calc" / "calc.py:add", name="tier-refused")
    with pytest.raises(errors.BadRequest, match="needs 1 GPU"):
        client.update_model("tier-refused", tier="gpu")
    with pytest.raises(errors.BadRequest, match="CPUs and this machine has"):
        client.update_model("tier-refused", tier="wide")
    with pytest.raises(
        errors.BadRequest, match="No hardware tier named 'huge'; the tiers are: gpu, one, wide"
    ):
        client.update_model("tier-refused", tier="huge")
    failed = tiered.cli("models", "update", "tier-refused", "--tier", "gpu")
    assert failed.returncode == 1
    assert failed.stderr.startswith("Error: Tier 'gpu' needs 1 GPU(s)")
    assert client.model("tier-refused")["tier"] is None
