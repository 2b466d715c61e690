"""The arbiter: ``modelhost serve``'s first process, which keeps the serving process running.

The serving process (:mod:`modelhost.server`) runs the API, the gateway, the reconciler and the
instances. If it dies (killed, out of memory, a crash in a native library), this small process
starts it again at once: it holds what must outlive the serving process, namely the data
directory's lock and the listening sockets. Connections that arrive in between wait in the
sockets' backlog instead of being refused, and are answered when the new serving process is up.

It is the ``child subreaper`` of everything the serving process starts: what a dead serving
process leaves behind is reparented to it, and it ends all of it before it starts the next one,
so a version never has two sets of instances. The serving process dies with it (parent-death
signal), and a start after the arbiter itself was killed ends what the pid files name
(:mod:`modelhost.pidfiles`). The pattern is gunicorn's arbiter, with one worker.

It restarts the serving process when it died after it had been ready. A serving process that
fails before it is ready the first time (a setting, the port, another server on the database)
ends the arbiter with its exit code and its ``Error:`` line. SIGTERM and SIGINT are passed on,
and the arbiter exits when the serving process has drained.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import orjson

from modelhost import datadir, errors, pidfiles
from modelhost.lifetime import become_subreaper
from modelhost.settings import Settings

logger = logging.getLogger("modelhost.arbiter")

#: after this many starts in a row that never got ready, wait this long between them at most
_MAX_BACKOFF_SECONDS = 10.0
#: how long what a dead serving process left behind gets to go before the next one starts
_LEFTOVER_SECONDS = 5.0
#: the file in the data directory that names the serving process
SERVING_PID_FILE = "serving.pid"
#: what the serving process writes to the ready pipe once it accepts connections
READY = b"ready\n"


@dataclass(frozen=True)
class Inherited:
    """What the serving process gets from the arbiter, as file descriptors."""

    #: the data directory's lock, held by the arbiter for as long as it runs
    lock: int
    #: the listening sockets on the server's port, one per process that takes connections
    listeners: tuple[int, ...]
    #: the pipe on which the serving process says it is ready
    ready: int
    #: the arbiter's process id: the serving process dies with it
    arbiter: int

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "lock": self.lock,
                "listeners": list(self.listeners),
                "ready": self.ready,
                "arbiter": self.arbiter,
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> Inherited:
        data = orjson.loads(text)
        return cls(
            int(data["lock"]),
            tuple(int(fd) for fd in data["listeners"]),
            int(data["ready"]),
            int(data["arbiter"]),
        )

    def fds(self) -> tuple[int, ...]:
        return (self.lock, *self.listeners, self.ready)


class Arbiter:
    """Holds the lock and the sockets, and keeps one serving process running."""

    def __init__(self, settings: Settings, lock: TextIO, listeners: list[socket.socket]) -> None:
        self.settings = settings
        self._lock = lock
        self._listeners = listeners
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = 0  # how many stop signals came
        self._wake_read, self._wake_write = os.pipe()

    @classmethod
    def open(cls, settings: Settings) -> Arbiter:
        """Lock the data directory, end what a killed server left, and listen on the port."""
        os.umask(datadir.UMASK)
        lock = lock_home(settings.home_path)
        try:
            listeners = listen(settings.host, settings.port, settings.gateway_processes)
        except errors.ModelhostError:
            lock.close()
            raise
        pidfiles.end_leftovers(settings.home_path / pidfiles.RUN_DIRECTORY)
        return cls(settings, lock, listeners)

    def run(self, argv: Sequence[str]) -> int:
        """Run ``argv`` (the serving process's command, to which ``--inherit`` is added) until
        it exits on purpose; returns the exit code for the arbiter to exit with."""
        with contextlib.suppress(OSError):  # without it, leftovers go to init: pid files remain
            become_subreaper()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        os.set_blocking(self._wake_write, False)
        signal.set_wakeup_fd(self._wake_write)
        ever_ready = False
        failures = 0
        while True:
            started = time.monotonic()
            code, ready = self._serve_once(argv)
            self._end_leftovers()
            ever_ready = ever_ready or ready
            if self._stopping or not ever_ready or code == 0:
                return code if code >= 0 else 128 - code
            failures = 0 if ready else failures + 1
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            wait = min(_MAX_BACKOFF_SECONDS, 0.5 * (2**failures - 1)) if failures else 0.0
            sys.stderr.write(
                f"modelhost: the serving process {how} after "
                f"{time.monotonic() - started:.1f} s; starting it again"
                + (f" in {wait:g} s\n" if wait else "\n")
            )
            sys.stderr.flush()
            if wait and self._sleep(wait):
                return 0

    def _serve_once(self, argv: Sequence[str]) -> tuple[int, bool]:
        """Start the serving process and wait for it to end: (exit code, whether it was
        ready), the code negative for a signal."""
        ready_read, ready_write = os.pipe()
        inherited = Inherited(
            self._lock.fileno(),
            tuple(s.fileno() for s in self._listeners),
            ready_write,
            os.getpid(),
        )
        child = subprocess.Popen(
            [*argv, "--inherit", inherited.to_json()],
            pass_fds=inherited.fds(),
            preexec_fn=os.setpgrp,  # a terminal's Ctrl-C reaches the arbiter, which passes it on
        )
        os.close(ready_write)
        self._child = child
        (self.settings.home_path / SERVING_PID_FILE).write_text(f"{child.pid}\n")
        if self._stopping:
            self._pass_on(signal.SIGTERM)
        ready = False
        watched = [ready_read, self._wake_read]
        try:
            while True:
                status = self._reap(child.pid)
                if status is not None:
                    child.returncode = status
                    return status, ready
                readable, _, _ = select.select(watched, [], [], 1.0)
                if self._wake_read in readable:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, 512)
                if ready_read in readable:
                    ready = ready or os.read(ready_read, len(READY)) == READY
                    watched = [self._wake_read]  # said, or closed: nothing more comes
        finally:
            os.close(ready_read)
            self._child = None

    def _reap(self, pid: int) -> int | None:
        """Reap every child that ended; the serving process's status if it is one of them."""
        found: int | None = None
        while True:
            try:
                ended, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return found
            if ended == 0:
                return found
            if ended == pid:
                found = os.waitstatus_to_exitcode(status)

    def _end_leftovers(self) -> None:
        """Kill what the dead serving process left (reparented here) and wait for it to go."""
        deadline = time.monotonic() + _LEFTOVER_SECONDS
        while time.monotonic() < deadline:
            left = _children_of(os.getpid())
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._reap(0)
            time.sleep(0.02)

    def _on_stop(self, signum: int, _frame: object) -> None:
        self._stopping += 1
        # The first stop drains (SIGTERM); another one asks the server to hurry (SIGINT).
        self._pass_on(signal.SIGTERM if self._stopping == 1 else signal.SIGINT)

    def _pass_on(self, signum: int) -> None:
        child = self._child
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if told to stop; True when told to stop."""
        deadline = time.monotonic() + seconds
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            select.select([self._wake_read], [], [], left)
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 512)
        return bool(self._stopping)


def _children_of(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (living ones; zombies are reaped instead)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(name))
    return found


def lock_home(home: Path) -> TextIO:
    """One server per data directory: a second one would run every instance twice."""
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = (home / "server.lock").open("a+")
    except OSError as exc:
        raise errors.BadRequest(
            f"Cannot use {home} as the data directory ({exc.strerror}); give a directory this "
            "user can write to with --home or MODELHOST_HOME."
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        raise errors.Conflict(
            f"Another modelhost server ({owner}) is using the data directory {home}; stop it, "
            "or give this one another --home."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def listen(host: str, port: int, processes: int) -> list[socket.socket]:
    """A listening socket on ``host:port`` for each process that takes connections (the
    kernel spreads new connections over them, SO_REUSEPORT), or an error that says what to
    do when the address cannot be used."""
    listeners: list[socket.socket] = []
    try:
        if processes > 1:  # shared sockets bind beside any other: first, one that may not
            _listening(host, port, shared=False).close()
        for _ in range(processes):
            listeners.append(_listening(host, port, shared=processes > 1))
    except socket.gaierror as exc:
        _close(listeners)
        raise errors.BadRequest(
            f"Cannot find the address of {host} ({exc.strerror}); pass --host (or set "
            "MODELHOST_HOST) to 127.0.0.1, 0.0.0.0 (every address) or one of this "
            "machine's addresses."
        ) from None
    except OSError as exc:
        _close(listeners)
        if exc.errno == errno.EADDRNOTAVAIL:
            raise errors.BadRequest(
                f"This machine has no address {host}; pass --host (or set MODELHOST_HOST) "
                "to 127.0.0.1, 0.0.0.0 (every address) or one of its own addresses."
            ) from None
        if exc.errno == errno.EACCES:
            raise errors.BadRequest(
                f"Cannot listen on {host}:{port} ({exc.strerror}): ports below 1024 need "
                "privileges. Pass --port (or set MODELHOST_PORT) to 1024 or above."
            ) from None
        raise errors.Conflict(
            f"Cannot listen on {host}:{port} ({exc.strerror}); another program uses it. "
            "Stop it or pass --port (or set MODELHOST_PORT)."
        ) from None
    return listeners


def _listening(host: str, port: int, *, shared: bool) -> socket.socket:
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        listener.listen(2048)
        listener.set_inheritable(True)
    except OSError:  # socket.gaierror too: the caller turns it into an error line
        listener.close()
        raise
    return listener


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()
