"""Process lifetimes the kernel enforces: a process that dies with its parent, and a parent
that inherits what its children leave behind (Linux ``prctl``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl failed")


def die_with_parent(parent: int) -> None:
    """This process is killed (SIGKILL) when its parent, ``parent``, dies; if that happened
    already, it exits now."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def become_subreaper() -> None:
    """Orphans among this process's descendants become its children, not init's."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
