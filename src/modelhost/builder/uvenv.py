"""Isolated Python environments, made with uv: find an interpreter, lock, build, cache, prune.

uv is a dependency of modelhost (the ``uv`` package on PyPI ships the binary), so nothing is
downloaded at run time except the user's packages, from the index uv is configured for. Every
uv command runs with the ``uv_cache_dir`` setting as its cache and with Python downloads off.

An environment is cached as ``$MODELHOST_HOME/envs/<key>/``, where the key is the sha256 of the
lock and the interpreter (:func:`environment_key`), so versions and models with the same lock
share one. A build runs under a file lock for its key, into ``envs/.tmp/``, and is renamed into
place when complete: concurrent builds of one environment do not collide, and a failed or timed
out build leaves nothing behind.

Resolving and installing run the project's code too (a source package's build script, a local
path or a git URL in the requirements), so every uv command runs in the sandbox, as one
unprivileged uid for all builds (:data:`BUILDER`): it sees the project (read-only), uv's cache
and what it writes to, and nothing else of the data directory, with none of the server's
variables but uv's own, the proxy and the certificate ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from uv import find_uv_bin

from modelhost import errors
from modelhost.sandbox import Confinement, open_sandbox
from modelhost.settings import Settings

#: Written inside a finished environment, before it is renamed into place.
READY_MARKER = ".modelhost-ready"
LOCK_FILE = "modelhost-lock.txt"
_KEY_SCHEME = "modelhost-environment-1"
#: whose code a build is, for the sandbox: every build runs as the uid this names
BUILDER = "modelhost-environment-builder"
#: the server's variables a build still sees: uv's settings, proxies, certificates, locale
_PASSED = ("UV_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_", "LANG", "LC_")

Log = Callable[[str], None]
#: What uv draws around its messages on a terminal: a cross, a corner, an arrow, a bar.
_DECORATIONS = "\u00d7\u2570\u2500\u25b6\u2502 "


@dataclass(frozen=True)
class Python:
    """A base interpreter that environments are made from."""

    path: str
    version: str


@dataclass(frozen=True)
class Deadline:
    """When a build must be done by; ``cancel`` ends it early (the server is stopping)."""

    at: float
    cancel: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def after(cls, settings: Settings, cancel: threading.Event | None = None) -> Deadline:
        at = time.monotonic() + settings.environment_build_timeout_seconds
        return cls(at, cancel or threading.Event())

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise timed_out()
        return left


def timed_out() -> errors.EnvironmentFailed:
    return errors.EnvironmentFailed(
        "The environment took too long to build (setting environment_build_timeout_seconds); "
        "raise the setting, or pin fewer or smaller packages, and publish again."
    )


def uv_bin() -> str:
    return find_uv_bin()


def uv_environ(settings: Settings) -> dict[str, str]:
    """What uv sees of the server's environment (its own settings, proxies, certificates and
    locale, never the server's secrets), with modelhost's cache and no Python downloads."""
    env = {k: v for k, v in os.environ.items() if k.upper().startswith(_PASSED)}
    env.update(
        {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": "/tmp",  # noqa: S108 (the sandbox's own; uv's cache is set below)
            "UV_CACHE_DIR": str(settings.uv_cache_path),
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
            "NO_COLOR": "1",
        }
    )
    return env


def sandboxed(
    argv: list[str],
    settings: Settings,
    *,
    cwd: Path,
    writable: bool,
    writes: tuple[Path, ...] = (),
    programs: tuple[str, ...] = (),
) -> list[str]:
    """``argv`` wrapped in the build's sandbox: ``cwd`` (writable or not) and ``writes``
    besides uv's cache are all it sees of the data directory; the network is on."""
    cache = settings.uv_cache_path
    cache.mkdir(parents=True, exist_ok=True)
    sandbox = open_sandbox(settings)
    confinement = Confinement(
        workdir=cwd,
        owner=BUILDER,
        writable=writable,
        programs=(uv_bin(), *programs),
        read_write=(cache, *writes),
    )
    sandbox.prepare(confinement)
    return sandbox.command(argv, confinement)


def run(
    argv: list[str],
    *,
    settings: Settings,
    deadline: Deadline,
    log: Log,
    cwd: Path,
    keep_stdout: bool = True,
) -> tuple[int, list[str]]:
    """Run a uv command (already :func:`sandboxed`), passing its output to ``log`` line by
    line as it comes.

    Returns the exit code and the lines; past the deadline (or once it is cancelled) the
    command's process group is killed and :func:`timed_out` raised.
    """
    killed = threading.Event()
    finished = threading.Event()
    lines: list[str] = []
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=uv_environ(settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if keep_stdout else subprocess.PIPE,
        start_new_session=True,
    ) as process:

        def kill() -> None:
            killed.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        def watch() -> None:
            while not finished.wait(min(0.2, max(deadline.at - time.monotonic(), 0))):
                if deadline.cancel.is_set() or time.monotonic() >= deadline.at:
                    kill()
                    return

        watchdog = threading.Thread(target=watch, name="uv-watchdog", daemon=True)
        watchdog.start()
        try:
            stream: IO[bytes] | None = process.stdout if keep_stdout else process.stderr
            assert stream is not None
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                lines.append(line)
                log(line)
            code = process.wait()
        finally:
            finished.set()
            if process.poll() is None:
                kill()
                process.wait()
    if killed.is_set():
        if deadline.cancel.is_set():
            raise errors.EnvironmentFailed("The server stopped while the environment was built.")
        raise timed_out()
    return code, lines


_CAUSES = ("cause:", "Caused by:")


def reason(lines: list[str]) -> str:
    """The line of uv's output that says what went wrong, without its decorations: a
    resolver's "Because ..." line, else uv's last ``error:`` with its causes."""
    stripped = [line.strip().lstrip(_DECORATIONS).strip() for line in lines]
    stripped = [line for line in stripped if line.strip("^~ ")]  # not a caret under a line
    for line in reversed(stripped):
        if "Because" in line or "not found" in line or "No interpreter" in line:
            return line.removeprefix("error:").removeprefix("cause:").strip()
    starts = [i for i, line in enumerate(stripped) if line.startswith("error:")]
    if starts:
        parts = [stripped[starts[-1]].removeprefix("error:").strip()]
        for line in stripped[starts[-1] + 1 :]:
            if line.startswith(_CAUSES):
                parts.append(line.split(":", 1)[1].strip())
        return ": ".join(part for part in parts if part)
    return stripped[-1] if stripped else "uv failed without saying why"


@functools.lru_cache(maxsize=64)
def _probe(path: str) -> Python:
    """The version of the interpreter at ``path``."""
    try:
        done = subprocess.run(
            [path, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise errors.EnvironmentFailed(f"The Python at {path} does not run: {exc}.") from None
    return Python(path=path, version=done.stdout.strip())


def find_python(settings: Settings, request: str | None) -> Python:
    """The interpreter for ``request`` (a version such as ``3.11``, or a path); the server's
    Python (the ``python`` setting, else the server's own) without one."""
    default = str(settings.python or sys.executable)
    if not request:
        return _probe(default)
    if "/" in request:
        if not Path(request).is_file():
            raise errors.EnvironmentFailed(f"There is no Python at {request} on this server.")
        return _probe(request)
    settings.home_path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [uv_bin(), "python", "find", "--no-python-downloads", request],
            capture_output=True,
            text=True,
            timeout=30,
            env=uv_environ(settings),
            cwd=settings.home_path,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise errors.EnvironmentFailed(f"Could not look for Python {request}: {exc}.") from None
    if done.returncode != 0 or not done.stdout.strip():
        server = _probe(default)
        raise errors.EnvironmentFailed(
            f"There is no Python {request} on this server. Install it, or leave out the Python "
            f"choice to use the server's Python {server.version}."
        )
    return _probe(done.stdout.strip().splitlines()[-1])


def compile_lock(
    settings: Settings,
    requirements: Path,
    python: Python,
    *,
    deadline: Deadline,
    log: Log,
    cwd: Path,
) -> str:
    """Resolve ``requirements`` for ``python`` into exact pins with hashes (the lock).

    In the sandbox the build sees ``cwd`` when the requirements are in it (they may name
    files beside them: ``-r``, ``-e .``), otherwise a copy of the requirements alone.
    """
    scratch = settings.home_path / "tmp"
    box = scratch / f"lock-{secrets.token_hex(8)}"
    box.mkdir(parents=True)
    try:
        if cwd != scratch and cwd in requirements.absolute().parents:
            workdir, source = cwd, requirements
        else:
            workdir, source = box, box / "requirements.txt"
            shutil.copyfile(requirements, source)
        output = box / "lock.txt"
        argv = [
            uv_bin(),
            "pip",
            "compile",
            str(source),
            "--generate-hashes",
            "--no-header",
            "--no-annotate",
            "--python",
            python.path,
            "--output-file",
            str(output),
        ]
        argv = sandboxed(
            argv,
            settings,
            cwd=workdir,
            writable=workdir == box,
            writes=() if workdir == box else (box,),
            programs=(python.path,),
        )
        code, lines = run(
            argv, settings=settings, deadline=deadline, log=log, cwd=workdir, keep_stdout=False
        )
        if code != 0:
            raise errors.EnvironmentFailed(f"The requirements cannot be resolved: {reason(lines)}")
        return output.read_text()
    finally:
        shutil.rmtree(box, ignore_errors=True)


def pins(lock: str) -> list[str]:
    """The ``name==version`` lines of a lock, without hashes."""
    return [
        line.split()[0]
        for line in lock.splitlines()
        if line and not line[0].isspace() and not line.startswith(("#", "-"))
    ]


def environment_key(lock: str, python: Python) -> str:
    """The cache key: the same lock for the same interpreter is the same environment."""
    text = f"{_KEY_SCHEME}\n{python.version}\n{os.path.realpath(python.path)}\n{lock}"
    return hashlib.sha256(text.encode()).hexdigest()


def environment_python(settings: Settings, key: str) -> Path | None:
    """The interpreter of the cached environment ``key``, or None when it is not built."""
    root = settings.envs_path / key
    if (root / READY_MARKER).is_file():
        return root / "bin" / "python"
    return None


@contextlib.contextmanager
def _locked(settings: Settings, key: str, deadline: Deadline | None) -> Iterator[bool]:
    """Hold the file lock of ``key``; without a deadline, yield False at once if it is taken."""
    locks = settings.envs_path / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{key}.lock").open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is None:
                    yield False
                    return
                deadline.remaining()
                time.sleep(0.2)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_environment(
    settings: Settings, lock: str, python: Python, *, deadline: Deadline, log: Log
) -> tuple[Path, bool]:
    """The interpreter of the environment for ``lock``: from the cache (True), or built now."""
    key = environment_key(lock, python)
    found = environment_python(settings, key)
    if found is not None:
        return found, True
    with _locked(settings, key, deadline):
        found = environment_python(settings, key)  # built by someone else while we waited
        if found is not None:
            return found, True
        staging_root = settings.envs_path / ".tmp"
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = staging_root / f"{key}-{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            venv = [uv_bin(), "venv", "--relocatable", "--python", python.path, str(staging)]
            code, lines = run(
                sandboxed(venv, settings, cwd=staging, writable=True, programs=(python.path,)),
                settings=settings,
                deadline=deadline,
                log=log,
                cwd=staging,
            )
            if code != 0:
                raise errors.EnvironmentFailed(f"Could not create the environment: {reason(lines)}")
            locked = staging / LOCK_FILE
            locked.write_text(lock)
            owner = staging.stat()
            os.chown(locked, owner.st_uid, owner.st_gid)  # the builder's, like the rest
            sync = [
                uv_bin(),
                "pip",
                "sync",
                "--require-hashes",
                "--python",
                str(staging / "bin" / "python"),
                str(locked),
            ]
            code, lines = run(
                sandboxed(sync, settings, cwd=staging, writable=True, programs=(python.path,)),
                settings=settings,
                deadline=deadline,
                log=log,
                cwd=staging,
            )
            if code != 0:
                raise errors.EnvironmentFailed(
                    f"The locked packages cannot be installed: {reason(lines)}"
                )
            (staging / READY_MARKER).write_text(f"{python.path}\n{python.version}\n")
            final = settings.envs_path / key
            if final.exists():  # an unfinished leftover, never used: replace it
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final / "bin" / "python", False


def _size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*"))


def prune(settings: Settings, in_use: set[str]) -> list[tuple[str, int]]:
    """Delete cached environments whose key is not in ``in_use``, and abandoned staging
    directories; one being built is left alone. Returns (key, bytes) of each removed."""
    root = settings.envs_path
    if not root.is_dir():
        return []
    removed: list[tuple[str, int]] = []
    trash = root / ".tmp"
    trash.mkdir(exist_ok=True)
    for path in sorted(root.iterdir()):
        key = path.name
        if key.startswith(".") or key in in_use or not path.is_dir():
            continue
        with _locked(settings, key, None) as mine:
            if not mine:
                continue
            size = _size(path)
            doomed = trash / f"{key}-pruned-{secrets.token_hex(4)}"
            path.rename(doomed)  # gone from its place at once, deleted below
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append((key, size))
    for path in sorted(trash.iterdir()):
        with _locked(settings, path.name.split("-")[0], None) as mine:
            if mine:
                shutil.rmtree(path, ignore_errors=True)
    return removed
