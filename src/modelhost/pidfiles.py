"""Pid files for the processes a server starts, so that the next start ends what a killed one
left behind (setting ``isolation = none``; in a sandbox the kernel ends them anyway).

Each file in the data directory's ``run/`` holds a process id and the process's start time, as
the kernel counts it: a process id reused by another program since is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

logger = logging.getLogger(__name__)

#: in the data directory
RUN_DIRECTORY = "run"


def started(pid: int) -> int | None:
    """When the process started (clock ticks since boot), or None if there is no such one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count after it.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def record(directory: Path, name: str, pid: int) -> None:
    """Note that ``pid`` (a process group leader) is ours, under ``name``."""
    when = started(pid)
    if when is None:
        return  # it is gone already
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / f"{name}.pid").write_text(f"{pid} {when}\n")


def forget(directory: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / f"{name}.pid").unlink()


def end_leftovers(directory: Path) -> list[int]:
    """Kill every recorded process (and its process group) that still runs, forget them all;
    returns the process ids that were killed."""
    ended: list[int] = []
    if not directory.is_dir():
        return ended
    for path in directory.glob("*.pid"):
        try:
            pid, when = (int(word) for word in path.read_text().split())
        except (OSError, ValueError):
            pid, when = 0, None
        if pid > 0 and started(pid) == when:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            ended.append(pid)
        path.unlink(missing_ok=True)
    if ended:
        logger.warning(
            "Ended %d process(es) a previous run of this server left behind: %s",
            len(ended),
            ", ".join(map(str, ended)),
        )
    return ended
