"""Start, probe and always stop the servers under test (modelhost and the ceiling).

Every process is started in its own session, bound to 127.0.0.1, waited for with a deadline,
and stopped with SIGTERM then SIGKILL. modelhost's instances run in sessions of their own (the
backend starts them so), so their pids are collected before the server stops and any that
outlive it are killed too: a benchmark must not leave load running behind it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.cases import ROOT, SINGLE_THREAD_ENV

HOST = "127.0.0.1"
_STOP_GRACE_SECONDS = 15.0


class ServerError(Exception):
    """A server did not start, or did not become ready in time; the message has its log."""


@dataclass
class Server:
    """A process this run started, with the log file it writes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str
    #: pid -> cmdline of descendants seen while running (they may be in other sessions)
    descendants: dict[int, bytes] = field(default_factory=dict)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def remember_descendants(self) -> None:
        """Note the server's process tree now, so ``stop`` can find instances it orphaned."""
        self.descendants.update(descendants(self.process.pid))


def free_port() -> int:
    """A port nobody listens on right now (the tiny race is fine on a benchmark machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def descendants(pid: int) -> dict[int, bytes]:
    """Every process below ``pid`` (Linux /proc), with its command line to recognise it later."""
    children = _children_by_parent()
    found: dict[int, bytes] = {}
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        cmdline = _cmdline(child)
        if cmdline is not None:
            found[child] = cmdline
        stack.extend(children.get(child, []))
    return found


def start(name: str, command: list[str], *, env: Mapping[str, str], log_path: Path) -> Server:
    """Start ``command`` in its own session with stdout and stderr going to ``log_path``."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name=name, process=process, log_path=log_path, url="")


def stop(server: Server) -> None:
    """SIGTERM the server's process group, SIGKILL it after a grace period, then any orphans."""
    if server.process.poll() is None:
        server.remember_descendants()
    _signal_group(server.process, signal.SIGTERM)
    try:
        server.process.wait(_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _signal_group(server.process, signal.SIGKILL)
        server.process.wait(_STOP_GRACE_SECONDS)
    for pid, cmdline in server.descendants.items():
        if _cmdline(pid) == cmdline:  # still the same process, not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, server: Server) -> None:
    """Poll ``check`` until it is true; fail with the server's log if it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise ServerError(
                f"{server.name} exited with {server.process.returncode} while waiting for "
                f"{what}:\n{server.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError, OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise ServerError(
                f"{server.name}: no {what} within {timeout:g} s:\n{server.log_tail()}"
            )
        time.sleep(0.1)


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=2.0).status_code == 200


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without MODELHOST_* settings (they would change what is measured)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
    env.update(extra)
    return env


def start_modelhost(
    home: Path,
    log_path: Path,
    *,
    gateway_processes: int = 1,
    isolation: str | None = None,
    name: str = "modelhost",
) -> Server:
    """``modelhost serve`` with a fresh MODELHOST_HOME and default settings but for
    ``gateway_processes`` and, when given, ``isolation`` (not yet ready: see
    ``wait_modelhost``)."""
    port = free_port()
    modelhost = Path(sys.executable).with_name("modelhost")
    settings = {"MODELHOST_HOME": str(home), "MODELHOST_GATEWAY_PROCESSES": str(gateway_processes)}
    if isolation is not None:
        settings["MODELHOST_ISOLATION"] = isolation
    server = start(
        name,
        [str(modelhost), "serve", "--host", HOST, "--port", str(port)],
        env=_clean_env(settings),
        log_path=log_path,
    )
    server.url = f"http://{HOST}:{port}"
    return server


def wait_modelhost(server: Server, *, timeout: float = 60.0) -> None:
    """Return once ``GET /health`` answers."""
    wait_until(
        lambda: _answers(f"{server.url}/health"), timeout=timeout, what="/health", server=server
    )


def isolation_of(server: Server) -> dict[str, Any]:
    """What a running modelhost says in ``/health`` about how it confines models' code."""
    try:
        response = httpx.get(f"{server.url}/health", timeout=10.0)
    except httpx.HTTPError as exc:
        raise ServerError(f"{server.name}: GET /health failed: {exc}") from exc
    if response.status_code != 200:
        raise ServerError(f"{server.name}: GET /health answered {response.status_code}")
    isolation: dict[str, Any] = response.json().get("isolation") or {}
    return isolation


def start_ceiling(log_path: Path, *, workers: int, module: str = "bench.ceiling") -> Server:
    """The ceiling app (or ``module``'s, the hop ceiling's) under uvicorn (not yet ready: see
    ``wait_ceiling``)."""
    port = free_port()
    server = start(
        module.rpartition(".")[2].replace("_", " "),
        [sys.executable, "-m", module, "--port", str(port), "--workers", str(workers)],
        env=_clean_env(SINGLE_THREAD_ENV),
        log_path=log_path,
    )
    server.url = f"http://{HOST}:{port}"
    return server


def wait_ceiling(server: Server, *, workers: int, timeout: float = 60.0) -> None:
    """Return once every worker has loaded the app and ``GET /health`` answers."""

    def ready() -> bool:
        started = server.log_tail(200).count("Started server process")
        return started >= workers and _answers(f"{server.url}/health")

    wait_until(ready, timeout=timeout, what=f"{workers} started workers", server=server)
