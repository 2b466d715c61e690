"""The CPUs of a local instance on a hardware tier: a cgroup with a CPU quota of exactly the
tier's ``cpus`` where one is writable, otherwise a CPU affinity (the first ``ceil(cpus)``
cores).

Where the cgroups go (setting ``cgroup_parent``, by default the server's own cgroup)::

    <parent>/modelhost-<hash of the data directory>/       this server's group
        instance-<id>/          cgroup v2: cpu.max "<cpus x period> <period>"
        forkserver-<id>/        cgroup v1: cpu.cfs_quota_us = cpus x cpu.cfs_period_us

A process started fresh (an instance, a fork server) is put in its cgroup by a shell that
writes its own pid to ``cgroup.procs`` and then ``exec``s the sandbox, so everything it starts
is in the cgroup from its first instruction; a forked instance is moved from its fork server's
cgroup into its own as soon as its pid is known, before it takes a call. The server does all of
this outside the sandbox, which has no ``/sys/fs/cgroup``. A cgroup is removed when its process
has exited; this server's group is made when the first instance on a tier starts, and removed
at start (with what a killed server left in it) and when the backend closes.

:func:`open_cpu_limit` picks the mechanism once, at start-up, by trying it: it moves a
``/bin/sh`` into a cgroup of the server's group and sees it there. The start-up log says which
it is and, for the affinity, why no cgroup could be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modelhost import errors
from modelhost.settings import Settings
from modelhost.tiers import affinity

logger = logging.getLogger(__name__)

SHELL = shutil.which("sh") or "/bin/sh"
TASKSET = shutil.which("taskset") or "/usr/bin/taskset"
#: the shell's script: into the cgroup whose ``cgroup.procs`` is ``$0``, then the command
_ENTER = 'echo $$ > "$0" && exec "$@"'
#: the smallest quota cgroup v1 accepts, in microseconds
_MIN_QUOTA_US = 1000
#: how long an ended instance's cgroup may take to empty before its stragglers are killed
_RELEASE_SECONDS = 2.0


class CpuLimit(Protocol):
    """How local instances get their tier's CPUs."""

    #: "cgroup v1", "cgroup v2" or "affinity"
    mechanism: str
    #: one line for the start-up log: the mechanism and where, or why not a cgroup
    status: str

    def command(self, name: str, cpus: float | None, argv: list[str]) -> list[str]:
        """``argv`` run with ``cpus`` CPUs, as the process ``name`` (``instance-…``)."""
        ...

    def place(self, name: str, pid: int, cpus: float | None) -> None:
        """Give a process already running (a forked instance) ``cpus`` CPUs."""
        ...

    async def release(self, name: str) -> None:
        """The process ``name`` has exited: remove what it was given."""
        ...

    def describe(self, name: str, cpus: float | None) -> dict[str, Any] | None:
        """What ``name`` got, for the instance view; None without a tier."""
        ...

    async def close(self) -> None:
        """The backend closes: remove what is left."""
        ...


class Affinity:
    """The first ``ceil(cpus)`` cores the server may use (``taskset``), inherited by the
    sandbox and everything in it."""

    mechanism = "affinity"

    def __init__(self, reason: str) -> None:
        self.status = f"CPU affinity (the first ceil(cpus) cores): {reason}"

    def command(self, name: str, cpus: float | None, argv: list[str]) -> list[str]:
        if cpus is None:
            return argv
        return [TASKSET, "--cpu-list", ",".join(map(str, affinity(cpus))), *argv]

    def place(self, name: str, pid: int, cpus: float | None) -> None:
        """A fork inherits its fork server's affinity: nothing to do."""

    async def release(self, name: str) -> None:
        return None

    def describe(self, name: str, cpus: float | None) -> dict[str, Any] | None:
        if cpus is None:
            return None
        return {"mechanism": self.mechanism, "cpus": cpus, "cores": affinity(cpus), "cgroup": None}

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class Quota:
    """A CPU quota in a cgroup's own words."""

    quota_us: int
    period_us: int


def quota_for(cpus: float, period_us: int) -> Quota:
    """``cpus`` CPUs as a quota per ``period_us``: 0.5 CPU is half of every period."""
    return Quota(max(_MIN_QUOTA_US, round(cpus * period_us)), period_us)


class Cgroups:
    """Cgroups under this server's group, ``group``, of cgroup ``version`` 1 or 2."""

    def __init__(self, version: int, group: Path) -> None:
        self.version = version
        self.group = group
        self.mechanism = f"cgroup v{version}"
        self.status = f"a cgroup v{version} CPU quota per instance, under {group}"
        #: the cgroups made, by name, with their CPUs; and those being removed
        self._placed: dict[str, float] = {}
        self._removals: dict[str, asyncio.Task[None]] = {}

    def path(self, name: str) -> Path:
        return self.group / name

    def create(self, name: str, cpus: float) -> Path:
        """The cgroup ``name`` with a quota of ``cpus`` CPUs (made, or its quota set again)."""
        if not self.group.is_dir():  # made when first needed, so a server with no tiers
            with contextlib.suppress(FileExistsError):  # leaves no trace
                self.group.mkdir()
            if self.version == 2:
                _enable_cpu(self.group)
        cgroup = self.path(name)
        with contextlib.suppress(FileExistsError):
            cgroup.mkdir()
        self._placed[name] = cpus  # removed when its process ends, whatever happens next
        try:
            if self.version == 2:
                period = int((cgroup / "cpu.max").read_text().split()[1])
                quota = quota_for(cpus, period)
                (cgroup / "cpu.max").write_text(f"{quota.quota_us} {quota.period_us}\n")
            else:
                period = int((cgroup / "cpu.cfs_period_us").read_text())
                quota = quota_for(cpus, period)
                (cgroup / "cpu.cfs_quota_us").write_text(f"{quota.quota_us}\n")
        except OSError as exc:
            # e.g. more CPUs than a quota on the server's own cgroup allows (EINVAL in v1)
            raise OSError(
                f"could not give the cgroup {cgroup} a quota of {cpus:g} CPUs "
                f"({exc.strerror or exc}); is the server itself held to fewer?"
            ) from exc
        return cgroup

    def command(self, name: str, cpus: float | None, argv: list[str]) -> list[str]:
        if cpus is None:
            return argv
        procs = self.create(name, cpus) / "cgroup.procs"
        return [SHELL, "-c", _ENTER, str(procs), *argv]

    def place(self, name: str, pid: int, cpus: float | None) -> None:
        if cpus is None:
            return
        try:
            (self.create(name, cpus) / "cgroup.procs").write_text(f"{pid}\n")
        except ProcessLookupError:
            pass  # it is gone already; its exit is reported as any other
        except OSError as exc:
            logger.warning("could not move process %d into its cgroup %s: %s", pid, name, exc)

    async def release(self, name: str) -> None:
        if name not in self._placed:
            return
        removal = self._removals.get(name)
        if removal is None:
            removal = asyncio.get_running_loop().create_task(self._remove(name))
            self._removals[name] = removal
        await asyncio.shield(removal)  # the backend's close waits for it too

    async def _remove(self, name: str) -> None:
        cgroup = self.path(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RELEASE_SECONDS
        killed = False
        try:
            while True:
                problem = remove(cgroup)
                if problem is None:
                    return
                if not killed:  # a process the instance left behind keeps it: end it
                    kill_members(cgroup)
                    killed = True
                if loop.time() > deadline:
                    logger.warning("could not remove the cgroup %s: %s", cgroup, problem)
                    return
                await asyncio.sleep(0.05)
        finally:
            self._placed.pop(name, None)
            self._removals.pop(name, None)

    def describe(self, name: str, cpus: float | None) -> dict[str, Any] | None:
        if cpus is None:
            return None
        return {
            "mechanism": self.mechanism,
            "cpus": cpus,
            "cores": None,
            "cgroup": str(self.path(name)),
        }

    def sweep(self) -> list[str]:
        """Remove the cgroups a killed server of this data directory left (ending what still
        runs in them), and the server's group (made again when an instance needs it); returns
        the names of the leftovers."""
        removed: list[str] = []
        if not self.group.is_dir():
            return removed
        for cgroup in sorted(p for p in self.group.iterdir() if p.is_dir()):
            kill_members(cgroup)
            deadline = time.monotonic() + _RELEASE_SECONDS
            while (problem := remove(cgroup)) is not None and time.monotonic() < deadline:
                time.sleep(0.05)  # until the killed processes are gone
            if problem is None:
                removed.append(cgroup.name)
            else:
                logger.warning("could not remove the leftover cgroup %s: %s", cgroup, problem)
        remove(self.group)
        return removed

    async def close(self) -> None:
        await asyncio.gather(*(self.release(name) for name in list(self._placed)))
        await asyncio.gather(*list(self._removals.values()))
        if not self.group.is_dir():
            return
        problem = remove(self.group)
        if problem is not None:
            logger.warning("could not remove this server's cgroup %s: %s", self.group, problem)


def remove(cgroup: Path) -> str | None:
    """Remove an empty cgroup; None when it is gone, else why not."""
    try:
        cgroup.rmdir()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def members(cgroup: Path) -> list[int]:
    try:
        return [int(word) for word in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def kill_members(cgroup: Path) -> None:
    """SIGKILL every process in ``cgroup`` (cgroup v2's ``cgroup.kill`` where it has one)."""
    kill = cgroup / "cgroup.kill"
    if kill.exists():
        with contextlib.suppress(OSError):
            kill.write_text("1\n")
            return
    for pid in members(cgroup):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------- finding a cgroup


@dataclass(frozen=True)
class Mount:
    version: int
    #: where it is mounted, and which cgroup path the mount point shows
    point: Path
    root: str


def cgroup_mounts(mountinfo: str) -> list[Mount]:
    """The cgroup v2 mount and the cgroup v1 mount with the ``cpu`` controller, from
    ``/proc/self/mountinfo``."""
    found: list[Mount] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        kind, options = after[0], after[2].split(",") if len(after) > 2 else []
        root, point = fields[3], Path(fields[4].replace("\\040", " "))
        if kind == "cgroup2":
            found.append(Mount(2, point, root))
        elif kind == "cgroup" and "cpu" in options:
            found.append(Mount(1, point, root))
    return found


def own_cgroups(proc_cgroup: str) -> dict[int, str]:
    """This process's cgroup v2 path and cgroup v1 ``cpu`` path, from ``/proc/self/cgroup``."""
    paths: dict[int, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[2] = path
        elif "cpu" in controllers.split(","):
            paths[1] = path
    return paths


def candidates(mountinfo: str, proc_cgroup: str) -> list[Path]:
    """The server's own cgroups where one could be made: cgroup v2 first, then v1's ``cpu``."""
    own = own_cgroups(proc_cgroup)
    found: list[Path] = []
    for mount in sorted(cgroup_mounts(mountinfo), key=lambda m: -m.version):
        path = own.get(mount.version)
        if path is None:
            continue
        if mount.root == "/":
            relative = path
        elif path == mount.root or path.startswith(mount.root + "/"):
            relative = path[len(mount.root) :]
        else:
            continue  # its cgroup is not under this mount
        found.append(mount.point / relative.lstrip("/"))
    return found


def own_quota(mountinfo: str | None = None, proc_cgroup: str | None = None) -> float | None:
    """The CPUs this process's cgroups allow it (a container's ``--cpus``, a systemd
    ``CPUQuota=``): the smallest quota of its cgroup and of those above it up to the mount,
    cgroup v2's ``cpu.max`` or v1's ``cpu.cfs_quota_us``; None for no quota, or none readable.
    """
    try:
        mountinfo = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
        proc_cgroup = (
            proc_cgroup if proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
        )
    except OSError:
        return None
    points = {mount.point for mount in cgroup_mounts(mountinfo)}
    found: float | None = None
    for cgroup in candidates(mountinfo, proc_cgroup):
        here = cgroup
        while True:
            quota = _quota_of(here)
            if quota is not None:
                found = quota if found is None else min(found, quota)
            if here in points or here.parent == here:
                break
            here = here.parent
    return found


def _quota_of(cgroup: Path) -> float | None:
    """The CPUs one cgroup's own quota allows; None for none (or unreadable)."""
    try:
        if (cgroup / "cpu.max").exists():
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if (cgroup / "cpu.cfs_quota_us").exists():
            quota_us = int((cgroup / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup / "cpu.cfs_period_us").read_text())
            return None if quota_us < 0 else quota_us / period_us
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return None


def _version_of(parent: Path) -> int:
    if (parent / "cgroup.controllers").exists():
        return 2
    if (parent / "cpu.cfs_quota_us").exists():
        return 1
    raise OSError(f"{parent} is not a cgroup v2, nor a cgroup v1 with the cpu controller")


def _enable_cpu(cgroup: Path) -> None:
    """Hand the cpu controller to ``cgroup``'s children (cgroup v2)."""
    control = cgroup / "cgroup.subtree_control"
    if "cpu" in control.read_text().split():
        return
    try:
        control.write_text("+cpu\n")
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise OSError(
                f"cannot enable the cpu controller in {cgroup}: it has processes of its own, "
                "and a cgroup v2 with processes cannot hand controllers to children"
            ) from None
        raise


def open_group(parent: Path, home: Path) -> Cgroups:
    """This server's group under ``parent``, made and proven; raises OSError saying why not."""
    version = _version_of(parent)
    if version == 2:
        available = (parent / "cgroup.controllers").read_text().split()
        if "cpu" not in available:
            raise OSError(f"the cpu controller is not available in {parent}")
        _enable_cpu(parent)
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
    cgroups = Cgroups(version, parent / f"modelhost-{digest}")
    _probe(cgroups)
    return cgroups


def _probe(cgroups: Cgroups) -> None:
    """Start a shell in a cgroup of the group, as an instance would be, and see it there."""
    procs = cgroups.create("probe", 0.01) / "cgroup.procs"  # fits under any quota above
    try:
        done = subprocess.run(
            [SHELL, "-c", _ENTER, str(procs), SHELL, "-c", "cat /proc/self/cgroup"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    finally:
        cgroups._placed.pop("probe", None)
        remove(cgroups.path("probe"))
    if done.returncode != 0 or f"/{cgroups.group.name}/probe" not in done.stdout:
        raise OSError(
            f"a process could not be put in a cgroup ({done.stderr.strip() or done.stdout.strip()})"
        )


def open_cpu_limit(
    settings: Settings,
    *,
    mountinfo: str | None = None,
    proc_cgroup: str | None = None,
) -> Affinity | Cgroups:
    """The mechanism the settings ask for (``cpu_limit``, ``cgroup_parent``) that works here;
    ``cpu_limit = cgroup`` without a writable cgroup stops the server with one line saying
    what to do. Empties this server's group of what a killed server left."""
    if settings.cpu_limit == "affinity":
        chosen: Affinity | Cgroups = Affinity("the setting cpu_limit is affinity")
    else:
        chosen = _find(settings, mountinfo, proc_cgroup)
    if isinstance(chosen, Cgroups):
        swept = chosen.sweep()
        if swept:
            logger.info("Removed %d leftover cgroup(s): %s", len(swept), ", ".join(swept))
    logger.info("CPUs of hardware tiers: %s.", chosen.status)
    return chosen


def _find(settings: Settings, mountinfo: str | None, proc_cgroup: str | None) -> Affinity | Cgroups:
    if settings.cgroup_parent:
        parents: Sequence[Path] = [Path(settings.cgroup_parent)]
    else:
        try:
            mountinfo = (
                mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
            )
            proc_cgroup = (
                proc_cgroup if proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
            )
        except OSError:
            mountinfo, proc_cgroup = "", ""
        parents = candidates(mountinfo, proc_cgroup)
    reasons: list[str] = []
    for parent in parents:
        try:
            return open_group(parent, settings.home_path)
        except (OSError, ValueError, IndexError) as exc:
            reasons.append(_say(exc))
    reason = "; ".join(reasons) or "no cgroup file system with the cpu controller is mounted"
    if settings.cpu_limit == "cgroup":
        raise errors.InvalidSetting(
            f"cpu_limit = cgroup, but no cgroup can be used: {reason}. Set cgroup_parent to a "
            "cgroup this user may write with the cpu controller (cgroup v2: an empty "
            "delegated one, e.g. systemd's Delegate=yes with DelegateSubgroup=), or set "
            "cpu_limit = auto to fall back to a CPU affinity."
        )
    return Affinity(f"no cgroup can be used ({reason}); set cgroup_parent to a writable one")


def _say(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
