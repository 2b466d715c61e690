"""Hardware tiers on the local backend, through a real server: a model picks a tier and its
instances get exactly that tier's CPUs (a cgroup CPU quota where one is writable, as on this
machine) and memory (its limit); a tier the machine cannot satisfy, or that does not exist, is
refused with a clear error (docs/scaling.md)."""

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
    "half": {"cpus": 0.5, "memory_mb": 300},
    "gpu": {"cpus": 1, "memory_mb": 150, "gpus": 1},
    "wide": {"cpus": len(os.sched_getaffinity(0)) + 1, "memory_mb": 150},
}
PROBE = """\
import os
import time


def probe(hog_mb=0, spin_seconds=0):
    if hog_mb:
        hog = bytearray(hog_mb * 1024 * 1024)
        for i in range(0, len(hog), 4096):
            hog[i] = 1
        time.sleep(5)
    began, cpu = time.monotonic(), time.process_time()
    end = cpu + spin_seconds
    while time.process_time() < end:  # CPU time, however much the quota holds it back
        pass
    return {
        "cores": len(os.sched_getaffinity(0)),
        "instance": os.environ["MODELHOST_INSTANCE_ID"],
        "cpu": time.process_time() - cpu,
        "wall": time.monotonic() - began,
    }
"""


def cpu_cgroup_of(pid: int) -> Path:
    """The directory of the cgroup ``pid`` is in for the cpu controller, as the kernel says
    (``/proc/PID/cgroup``; cgroup v1's cpu hierarchy where it is mounted, else v2)."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    v1 = [m[1] for m in mounts if m[2] == "cgroup" and "cpu" in m[3].split(",")]
    v2 = [m[1] for m in mounts if m[2] == "cgroup2"]
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if v1 and "cpu" in controllers.split(","):
            return Path(v1[0]) / path.lstrip("/")
        if not v1 and controllers == "":
            return Path(v2[0]) / path.lstrip("/")
    raise AssertionError(f"process {pid} is in no cpu cgroup")


def quota_and_period(cgroup: Path) -> tuple[int, int]:
    if (cgroup / "cpu.max").exists():
        quota, period = (cgroup / "cpu.max").read_text().split()
        return int(quota), int(period)
    return (
        int((cgroup / "cpu.cfs_quota_us").read_text()),
        int((cgroup / "cpu.cfs_period_us").read_text()),
    )


def periods(cgroup: Path) -> int:
    """Enforcement periods in which the cgroup's processes ran (cpu.stat ``nr_periods``)."""
    stat = dict(line.split() for line in (cgroup / "cpu.stat").read_text().splitlines())
    return int(stat["nr_periods"])


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
    # the instances restart on the tier, with zero downtime, each in a cgroup of one CPU
    instance = wait_until(
        lambda: next(
            (i for i in client.instances("tier-probe") if i.cpu_limit and i.state == "ready"),
            None,
        ),
        timeout=60,
    )
    quota, period = quota_and_period(cpu_cgroup_of(instance.pid))
    assert quota == period
    over = tiered.invoke("tier-probe", {"data": {"hog_mb": 300}})
    assert over.status_code == 502
    logs = "\n".join(line["text"] for line in client.logs("tier-probe", tail=1000))
    assert "over the limit of 150 MB (its hardware tier)" in logs
    shown = tiered.cli("models", "update", "tier-probe", "--tier", "", check=True).stdout
    assert "tier none" in shown
    wait_until(lambda: [i.cpu_limit for i in client.instances("tier-probe")] == [None], timeout=60)


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "fresh"])
def test_an_instance_on_half_a_cpu_runs_in_its_own_cgroup_with_half_of_each_period(
    tiered: Server, tmp_path: Path, fork: bool
) -> None:
    client = tiered.client()
    name = f"tier-half-{'forked' if fork else 'fresh'}"
    client.publish(_project(tmp_path) / "probe.py:probe", name=name, fork=fork)
    client.update_model(name, tier="half")
    instance = wait_until(
        lambda: next(
            (i for i in client.instances(name) if i.cpu_limit and i.state == "ready"), None
        ),
        timeout=60,
    )
    assert instance.forked is fork
    cgroup = cpu_cgroup_of(instance.pid)
    assert cgroup.name == f"instance-{instance.id}"
    assert instance.cpu_limit == {
        "mechanism": "cgroup v1" if (cgroup / "cpu.cfs_quota_us").exists() else "cgroup v2",
        "cpus": 0.5,
        "cores": None,
        "cgroup": str(cgroup),
    }
    quota, period = quota_and_period(cgroup)
    assert quota == period * TIERS["half"]["cpus"]
    listed = tiered.cli("instances", name, check=True).stdout
    assert f"0.5 ({instance.cpu_limit['mechanism']})" in listed
    # a function that keeps a core busy is held back to its half
    spun = tiered.invoke(name, {"data": {"spin_seconds": 0.3}})
    assert spun.status_code == 200, spun.text
    # A quota of half of each period gives at most that share of the time it took (plus the
    # period it began in); a busy machine can only make the share smaller, never larger.
    used = spun.json()["result"]
    quota_seconds = quota / 1_000_000
    assert used["cpu"] <= used["wall"] * TIERS["half"]["cpus"] + quota_seconds, used
    assert periods(cgroup) > 0  # the cgroup's quota was applied to it, period by period
    # polling for the next call (docs/settings.md, instance_busy_poll_microseconds) would
    # spend the quota: an instance on a share of the CPU sleeps until each call
    waits = [
        line["text"]
        for line in client.logs(name, tail=1000)
        if line["instance"] == instance.id and "waiting for calls" in line["text"]
    ]
    assert waits == ["[modelhost] waiting for calls: sleeps until each call (it never polls)"]
    # the cgroup goes with the instance
    client.update_model(name, tier="")
    wait_until(lambda: not cgroup.exists(), timeout=60)


def test_the_server_says_at_start_how_instances_get_their_tiers_cpus(tiered: Server) -> None:
    assert "CPUs of hardware tiers: a cgroup v" in tiered.log.read_text()


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
        errors.BadRequest,
        match="No hardware tier named 'huge'; the tiers are: gpu, half, one, wide",
    ):
        client.update_model("tier-refused", tier="huge")
    failed = tiered.cli("models", "update", "tier-refused", "--tier", "gpu")
    assert failed.returncode == 1
    assert failed.stderr.startswith("Error: Tier 'gpu' needs 1 GPU(s)")
    assert client.model("tier-refused")["tier"] is None
