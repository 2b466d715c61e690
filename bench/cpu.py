"""How much CPU went to processes outside the benchmark while it measured.

The machines are shared and have 2 cores: a test suite running beside the benchmark moves every
number. Rather than guess, each run records the CPU the whole machine spent in user and system
time minus what this benchmark's own processes (servers, their workers and instances, wrk)
spent: the rest was someone else's, and a run with much of it is not comparable to a quiet one.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def machine_seconds() -> float:
    """User + nice + system CPU seconds of all cores since boot (not irq, softirq or steal,
    which no process is charged for, so they would look like someone else's)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system = (int(value) for value in fields[1:4])
    return (user + nice + system) / _TICKS


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of one live process (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def seconds_of(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these live processes together."""
    return sum(process_seconds(pid) for pid in pids)


def children_seconds() -> float:
    """CPU of this process's finished children (wrk, once it has been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Snapshot:
    wall: float
    machine: float
    ours: float


def snapshot(pids: Iterable[int]) -> Snapshot:
    """The clocks now; ``pids`` are the long-running processes of this benchmark."""
    ours = process_seconds(os.getpid()) + children_seconds()
    ours += seconds_of(pids)
    return Snapshot(time.monotonic(), machine_seconds(), ours)


def foreign_cores(before: Snapshot, after: Snapshot) -> float:
    """Cores' worth of CPU that other processes used between the two snapshots."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    other = (after.machine - before.machine) - (after.ours - before.ours)
    return max(0.0, other / wall)
