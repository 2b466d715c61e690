"""How a local instance gets its hardware tier's CPUs (docs/scaling.md, "Hardware tiers"): a
cgroup whose quota is the tier's ``cpus`` times the period where one is writable, otherwise the
first ``ceil(cpus)`` cores. The cgroup files are checked against a temporary directory; the
fall-back and the sweep with real processes (this machine's cgroup v1 cpu controller is
writable; the through-the-server test is tests/integration/test_hardware_tiers.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from modelhost import errors
from modelhost.backends.base import InstanceSpec, InstanceState
from modelhost.backends.cpu_limit import (
    Affinity,
    Cgroups,
    candidates,
    open_cpu_limit,
    own_quota,
    remove,
)
from modelhost.backends.local import LocalBackend
from modelhost.sandbox import Unconfined
from modelhost.settings import Settings, load_settings
from tests.helpers import PROJECTS, wait_until


def _settings(home: Path, **values: Any) -> Settings:
    return load_settings({"home": str(home), **values}, environ={})


def _fake_cgroup(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


@pytest.mark.parametrize(("cpus", "quota"), [(0.5, 50000), (2, 200000), (0.001, 1000)])
def test_a_cgroup_v2_gets_cpus_times_the_period_in_cpu_max(
    tmp_path: Path, cpus: float, quota: int
) -> None:
    _fake_cgroup(tmp_path / "group" / "instance-a", {"cpu.max": "max 100000\n"})
    Cgroups(2, tmp_path / "group").create("instance-a", cpus)
    # 0.001 CPU is below the smallest quota the kernel takes (1 ms a period): it gets that
    assert (tmp_path / "group" / "instance-a" / "cpu.max").read_text() == f"{quota} 100000\n"


def test_a_cgroup_v1_gets_cpus_times_its_period_in_cfs_quota_us(tmp_path: Path) -> None:
    instance = _fake_cgroup(
        tmp_path / "group" / "instance-a",
        {"cpu.cfs_period_us": "250000\n", "cpu.cfs_quota_us": "-1\n"},
    )
    Cgroups(1, tmp_path / "group").create("instance-a", 0.5)
    assert (instance / "cpu.cfs_quota_us").read_text() == "125000\n"
    assert (instance / "cpu.cfs_period_us").read_text() == "250000\n"


def test_the_process_enters_its_cgroup_before_it_runs_the_command(tmp_path: Path) -> None:
    _fake_cgroup(tmp_path / "group" / "instance-a", {"cpu.max": "max 100000\n"})
    argv = Cgroups(2, tmp_path / "group").command("instance-a", 1, ["echo", "hello"])
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.communicate(timeout=10)[0] == "hello\n"
    # the pid written is the process's own: the shell became "echo"
    assert (tmp_path / "group" / "instance-a" / "cgroup.procs").read_text() == f"{process.pid}\n"


def test_without_a_tier_nothing_wraps_the_command(tmp_path: Path) -> None:
    assert Cgroups(2, tmp_path).command("instance-a", None, ["true"]) == ["true"]
    assert Affinity("why").command("instance-a", None, ["true"]) == ["true"]


@pytest.mark.parametrize(
    ("mountinfo", "proc_cgroup", "expected"),
    [
        (  # a systemd host: cgroup v2 only
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            "0::/system.slice/modelhost.service\n",
            ["/sys/fs/cgroup/system.slice/modelhost.service"],
        ),
        (  # this machine: both, v2 without cpu tried first, then v1's cpu controller
            "40 30 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
            "41 30 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            "1:cpu:/\n0::/\n",
            ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/cpu"],
        ),
        (  # cpu and cpuacct mounted together; a container that sees a subtree of the host's
            "40 30 0:30 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n",
            "3:cpu,cpuacct:/docker/abc/inner\n",
            ["/sys/fs/cgroup/cpu,cpuacct/inner"],
        ),
        (  # its cgroup is not under the mount: none
            "40 30 0:30 /docker/abc /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu\n",
            "3:cpu:/elsewhere\n",
            [],
        ),
    ],
)
def test_the_servers_own_cgroups_are_found_from_proc(
    mountinfo: str, proc_cgroup: str, expected: list[str]
) -> None:
    assert candidates(mountinfo, proc_cgroup) == [Path(p) for p in expected]


def test_a_parent_that_is_not_a_writable_cgroup_gives_the_affinity_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parent = _fake_cgroup(
        tmp_path / "parent", {"cgroup.controllers": "memory io\n", "cgroup.subtree_control": ""}
    )
    with caplog.at_level(logging.INFO):
        chosen = open_cpu_limit(_settings(tmp_path / "home", cgroup_parent=str(parent)))
    assert isinstance(chosen, Affinity)
    assert f"the cpu controller is not available in {parent}" in chosen.status
    assert "CPUs of hardware tiers: CPU affinity" in caplog.text
    not_a_cgroup = _settings(tmp_path / "home", cgroup_parent=str(tmp_path))
    assert "is not a cgroup v2, nor a cgroup v1" in open_cpu_limit(not_a_cgroup).status


def test_cpu_limit_cgroup_without_a_writable_cgroup_stops_the_server_saying_what_to_do(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path / "home", cpu_limit="cgroup", cgroup_parent=str(tmp_path))
    with pytest.raises(errors.InvalidSetting) as raised:
        open_cpu_limit(settings)
    message = str(raised.value)
    assert message.startswith("cpu_limit = cgroup, but no cgroup can be used")
    assert "Set cgroup_parent to a cgroup this user may write" in message
    assert "cpu_limit = auto" in message


def test_a_bad_cpu_limit_setting_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidSetting, match="expected auto, cgroup or affinity"):
        _settings(tmp_path, cpu_limit="quota")


def _spec(tmp_path: Path, cpus: float) -> InstanceSpec:
    workdir = tmp_path / "work"
    shutil.copytree(PROJECTS / "calc", workdir)
    return InstanceSpec(
        instance_id="i-1",
        model_id="m-1",
        version_id="v-1",
        version_number=1,
        workdir=workdir,
        file="calc.py",
        function="add",
        interpreter=sys.executable,
        log_path=tmp_path / "logs" / "v1-i-1.log",
        cpus=cpus,
    )


def _cpu_cgroup_line(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if "cpu" in line.split(":")[1].split(",") or line.startswith("0::"):
            return line
    return ""


@pytest.mark.parametrize(
    "unavailable", [{"cpu_limit": "affinity"}, {"cgroup_parent": "not-a-cgroup"}]
)
def test_without_a_cgroup_an_instance_on_a_tier_runs_on_the_first_cores_as_before(
    tmp_path: Path, unavailable: dict[str, str]
) -> None:
    values = {k: str(tmp_path / v) if k == "cgroup_parent" else v for k, v in unavailable.items()}
    limit = open_cpu_limit(_settings(tmp_path / "home", **values))
    assert limit.mechanism == "affinity"
    first = sorted(os.sched_getaffinity(0))[0]

    async def main() -> None:
        backend = LocalBackend(Unconfined("tests"), cpu=limit)
        try:
            instance = await backend.start(_spec(tmp_path, 1), 30)
            while instance.state is InstanceState.STARTING:
                await asyncio.sleep(0.02)
            assert instance.state is InstanceState.READY, instance.failure
            assert instance.pid is not None
            assert os.sched_getaffinity(instance.pid) == {first}
            assert "modelhost-" not in _cpu_cgroup_line(instance.pid)
            assert instance.cpu_limit == {
                "mechanism": "affinity",
                "cpus": 1,
                "cores": [first],
                "cgroup": None,
            }
        finally:
            await backend.close()

    asyncio.run(main())


def test_a_leftover_cgroup_of_this_data_directory_is_emptied_and_removed_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path / "home")
    first = open_cpu_limit(settings)
    assert isinstance(first, Cgroups), first.status  # this machine has a writable cgroup
    # a server killed with an instance running leaves its cgroup and maybe a process in it
    left = subprocess.Popen(first.command("instance-old", 0.5, ["sleep", "60"]))
    try:
        wait_until(lambda: "instance-old" in _cpu_cgroup_line(left.pid))
        reaper = threading.Thread(target=left.wait)  # as init reaps a dead server's orphans
        reaper.start()
        with caplog.at_level(logging.INFO):
            second = open_cpu_limit(settings)
        assert isinstance(second, Cgroups)
        assert second.group == first.group
        reaper.join(timeout=10)
        assert left.returncode == -9
        assert not (first.group / "instance-old").exists()
        assert "Removed 1 leftover cgroup(s): instance-old" in caplog.text
    finally:
        left.kill()
        left.wait()
        asyncio.run(second.close() if "second" in locals() else first.close())
    assert not first.group.exists()


def test_a_tier_above_what_the_parent_cgroup_allows_fails_the_instance_saying_why(
    tmp_path: Path,
) -> None:
    # the server's parent cgroup is held to half a CPU (cgroup v1 here): a child cannot have 1
    mount = next(
        Path(m.split()[1])
        for m in Path("/proc/mounts").read_text().splitlines()
        if m.split()[2] == "cgroup" and "cpu" in m.split()[3].split(",")
    )
    parent = mount / f"modelhost-test-{os.getpid()}"
    parent.mkdir()
    try:
        (parent / "cpu.cfs_quota_us").write_text(
            str(int((parent / "cpu.cfs_period_us").read_text()) // 2)
        )
        limit = open_cpu_limit(_settings(tmp_path / "home", cgroup_parent=str(parent)))
        assert isinstance(limit, Cgroups), limit.status

        async def main() -> None:
            backend = LocalBackend(Unconfined("tests"), cpu=limit)
            try:
                instance = await backend.start(_spec(tmp_path, 1), 30)
                assert instance.state is InstanceState.FAILED
                assert instance.failure is not None
                assert "a quota of 1 CPUs (Invalid argument)" in instance.failure
                assert "is the server itself held to fewer?" in instance.failure
            finally:
                await backend.close()

        asyncio.run(main())
        assert not limit.group.exists()
    finally:
        parent.rmdir()


# ------------------------------------------------ the CPUs the server's own cgroups allow
# (own_quota: an instance polls for its next call only where no quota would be spent by it,
# docs/architecture.md, "Waiting for the next call")


def _cgroup_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("version", "files", "expected"),
    [
        (2, {"a/b/cpu.max": "max 100000\n", "a/cpu.max": "150000 100000\n"}, 1.5),
        (2, {"a/b/cpu.max": "50000 100000\n", "a/cpu.max": "150000 100000\n"}, 0.5),
        (2, {"a/b/cpu.max": "max 100000\n", "a/cpu.max": "max 100000\n"}, None),
        (
            1,
            {
                "a/b/cpu.cfs_quota_us": "-1\n",
                "a/b/cpu.cfs_period_us": "100000\n",
                "a/cpu.cfs_quota_us": "200000\n",
                "a/cpu.cfs_period_us": "100000\n",
            },
            2.0,
        ),
        (1, {"a/b/cpu.cfs_quota_us": "-1\n", "a/b/cpu.cfs_period_us": "100000\n"}, None),
    ],
    ids=["v2 parent", "v2 own", "v2 none", "v1 parent", "v1 none"],
)
def test_the_smallest_quota_of_the_servers_cgroup_and_those_above_it_is_its_own(
    tmp_path: Path, version: int, files: dict[str, str], expected: float | None
) -> None:
    mount = tmp_path / "cgroup"
    _cgroup_files(mount, files)
    if version == 2:
        mountinfo, proc_cgroup = f"30 23 0:26 / {mount} rw - cgroup2 cgroup2 rw\n", "0::/a/b\n"
    else:
        mountinfo, proc_cgroup = f"40 30 0:30 / {mount} rw - cgroup cgroup rw,cpu\n", "4:cpu:/a/b\n"
    assert own_quota(mountinfo, proc_cgroup) == expected


def test_without_a_cgroup_mount_the_server_has_no_quota() -> None:
    assert own_quota("", "0::/\n") is None


def test_a_process_in_a_cgroup_with_a_quota_finds_it(tmp_path: Path) -> None:
    """The real thing: a process moved into a cgroup of this machine with a quota of 1.5 CPUs
    reads 1.5 from /proc and the cgroup file system, as a server there would."""
    limit = open_cpu_limit(_settings(tmp_path / "home"))
    assert isinstance(limit, Cgroups), limit.status  # this machine has a writable cgroup
    code = "from modelhost.backends import cpu_limit; print(cpu_limit.own_quota())"
    # entered as an instance on a tier of 1.5 CPUs is
    argv = limit.command("quota-probe", 1.5, [sys.executable, "-c", code])
    try:
        found = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    finally:
        limit._placed.pop("quota-probe", None)
        remove(limit.path("quota-probe"))
    assert found.stdout.strip() == "1.5", found.stderr
    assert own_quota() is None  # and this test's own process has none
