"""How an instance waits for its next call: a moment of polling before it sleeps.

A process asleep in ``recv`` is woken by the kernel when its next call arrives, and that wake-up
costs tens of microseconds (more in a virtual machine, where an idle core is halted): for a
small function, more than the function. So after answering, an instance whose last call came
less than ``budget`` after the answer before it polls its connection for the next one, for at
most ``budget``, instead of sleeping at once.

It polls only while the machine has a core to spare: three quarters of one idle over the last
fifth of a second (``/proc/uptime`` counts the idle time of all cores), counting its own polling
as idle, since it would have slept. A machine busy with the server, other instances or anything
else therefore gets no polling, which would only take their time. Calls that come further apart
than ``budget`` never make it poll, and a busy instance finds its next call already waiting.

This file is loaded by path by ``worker.py`` (it runs in the model's environment and imports
nothing of modelhost).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

#: seconds over which the machine's idle time is measured
WINDOW = 0.2
#: idle cores, besides this instance's polling, that the machine must have had
SPARE_CORES = 0.75

UPTIME = "/proc/uptime"


class Receiver:
    """``recv`` on an instance's connection, polling first when that pays (module docstring).

    Call :meth:`answered` after each answer is sent. ``budget`` is in seconds; 0 never polls.
    ``idle`` tells whether the machine has a core to spare (default: :class:`IdleCores`).
    """

    def __init__(
        self, sock: socket.socket, size: int, budget: float, idle: IdleCores | None = None
    ) -> None:
        self.sock = sock
        self.size = size
        self.budget = budget
        self._idle = (idle or IdleCores()) if budget > 0 else None
        self._answered = 0.0
        #: the last call came within ``budget`` of the answer before it
        self._close = False

    @property
    def described(self) -> str:
        """What the instance log says about it."""
        if self._idle is None:
            return "sleeps until each call (it never polls)"
        if not self._idle.readable:
            return f"sleeps until each call: it cannot read {self._idle.path} to poll"
        return (
            f"polls up to {self.budget * 1e6:.0f} us for a call that follows an answer closely, "
            "while the machine has a core to spare"
        )

    def answered(self) -> None:
        self._answered = time.perf_counter()

    def recv(self) -> bytes:
        idle = self._idle
        if self._close and idle is not None and idle.spare():
            started = time.perf_counter()
            data = self._poll()
            idle.polled(time.perf_counter() - started)
            if data is not None:
                return data
        return self._arrived(self.sock.recv(self.size))

    def close(self) -> None:
        if self._idle is not None:
            self._idle.close()

    def _poll(self) -> bytes | None:
        """The next bytes if they come within the budget, else None."""
        sock, size = self.sock, self.size
        until = self._answered + self.budget
        while True:
            try:
                return self._arrived(sock.recv(size, socket.MSG_DONTWAIT))
            except BlockingIOError:
                if time.perf_counter() > until:
                    return None

    def _arrived(self, data: bytes) -> bytes:
        self._close = time.perf_counter() - self._answered <= self.budget
        return data


class IdleCores:
    """Whether the machine had ``SPARE_CORES`` idle over the last ``WINDOW`` seconds, not
    counting the time this process spent polling (:meth:`polled`). Without a readable
    ``path`` (``/proc/uptime``), never."""

    def __init__(self, path: str = UPTIME, clock: Callable[[], float] = time.perf_counter) -> None:
        self.path = path
        self._clock = clock
        self._fd = _open_uptime(path)
        self._since = clock()
        self._idle_then = self._read() if self._fd is not None else 0.0
        self._polled = 0.0
        self._spare = False

    @property
    def readable(self) -> bool:
        return self._fd is not None

    def spare(self) -> bool:
        if self._fd is None:
            return False
        now = self._clock()
        elapsed = now - self._since
        if elapsed >= WINDOW:
            idle = self._read()
            cores = (idle - self._idle_then + self._polled) / elapsed
            self._spare = cores >= SPARE_CORES
            self._since, self._idle_then, self._polled = now, idle, 0.0
        return self._spare

    def polled(self, seconds: float) -> None:
        self._polled += seconds

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _read(self) -> float:
        """Seconds all cores have been idle since boot (``/proc/uptime``'s second field)."""
        assert self._fd is not None
        return _idle_seconds(self._fd)


def _idle_seconds(fd: int) -> float:
    return float(os.pread(fd, 64, 0).split()[1])


def _open_uptime(path: str) -> int | None:
    """A descriptor of ``path`` if its idle time can be read (not every sandbox or system has
    ``/proc/uptime``): without it, no polling."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        _idle_seconds(fd)
    except (OSError, ValueError, IndexError):
        os.close(fd)
        return None
    return fd
