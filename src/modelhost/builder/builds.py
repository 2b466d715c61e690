"""Environment builds: the first step of building a version whose environment is its own.

The reconciler asks :meth:`EnvironmentBuilds.interpreter` for the program that runs a version's
instances. For the server's Python and for R that is known at once. For an isolated or named
environment it is the environment's own interpreter: from the cache when it is there, else a
build starts in a thread and the reconciler starts instances on a later tick, once it is done.
The build resolves the project's requirements into a lock (unless the version already has one:
a named environment's, or its own from an earlier build), stores the lock with the version,
and makes the environment from it (:mod:`modelhost.builder.uvenv`). Its output goes into the
version's build log as it comes, so ``modelhost publish`` can show it. A failed build fails
only its version, which never took traffic.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from modelhost import errors
from modelhost.builder import environments, uvenv
from modelhost.builder.bundles import BundleStore
from modelhost.db.repo import BuildFailure, Repo, Version
from modelhost.settings import Settings

logger = logging.getLogger(__name__)

_FLUSH_SECONDS = 0.3


class _BuildLog:
    """Appends lines to a version's build log: modelhost's own at once, uv's a few times a
    second rather than one write per line."""

    def __init__(self, repo: Repo, version_id: str, *, shared: bool = True) -> None:
        self.repo = repo
        self.version_id = version_id
        #: False on a follower (several servers on one database): the leader writes the
        #: version's build log; a follower's own build goes to its server log
        self.shared = shared
        self._pending: list[str] = []
        self._flushed = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        """One of modelhost's own lines: a step, shown at once."""
        self._add(line)
        self.flush()

    def tool(self, line: str) -> None:
        """A line of uv's output, indented under modelhost's own."""
        if line.strip() and not line.startswith("Activate with"):
            self._add("  " + line)
            if time.monotonic() - self._flushed > _FLUSH_SECONDS:
                self.flush()

    def _add(self, line: str) -> None:
        with self._lock:
            self._pending.append(line + "\n")

    def flush(self) -> None:
        with self._lock:
            text, self._pending = "".join(self._pending), []
        self._flushed = time.monotonic()
        if text and self.shared:
            self.repo.append_build_log(self.version_id, text)
        elif text:
            logger.info("environment of version %s: %s", self.version_id, text.rstrip())


class EnvironmentBuilds:
    """Builds the environments versions need, at most one build per version at a time."""

    def __init__(
        self,
        *,
        settings: Settings,
        repo: Repo,
        store: BundleStore,
        workdir: Callable[[Version], Path],
        wake: Callable[[], None],
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        #: with several servers on one database, the leader resolves a version's lock and
        #: records the outcome; the others install from that lock (:mod:`modelhost.db.coordination`)
        self.leading = leading
        self.repo = repo
        self.store = store
        self.workdir = workdir
        self.wake = wake
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._built: dict[str, str] = {}  # version id -> interpreter of its environment
        self._failed: dict[str, errors.ModelhostError] = {}
        self._stopping = threading.Event()  # kills running uv commands when the server stops

    def building(self, version_id: str) -> bool:
        return version_id in self._tasks

    async def interpreter(self, version: Version) -> str | None:
        """The program for ``version``'s instances, or None while its environment builds.

        Raises the build's error once when the environment of a version that was already
        built could not be made again (the reconciler then backs off and retries).
        """
        if not version.isolated:
            return environments.interpreter(self.settings, version.environment_runtime)
        failure = self._failed.pop(version.id, None)
        if failure is not None:
            raise failure
        if version.id in self._tasks:
            return None
        if version.environment_lock is None and not self.leading():
            return None  # the leader resolves the lock; this server installs from it then
        known = self._built.get(version.id)
        if known is not None and Path(known).exists():
            return known
        if version.environment_hash:
            found = uvenv.environment_python(self.settings, version.environment_hash)
            if found is not None:
                self._built[version.id] = str(found)
                return str(found)
        task = asyncio.get_running_loop().create_task(self._build(version))
        self._tasks[version.id] = task
        return None

    async def close(self) -> None:
        """Stop the builds, killing their uv commands (which run in sessions of their own, so
        nothing else would); their versions stay ``building`` and build again at next start."""
        self._stopping.set()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()

    async def _build(self, version: Version) -> None:
        log = _BuildLog(self.repo, version.id, shared=self.leading())
        try:
            await asyncio.to_thread(self._build_now, version, log)
        except Exception as exc:
            if self._stopping.is_set():
                return  # the server is stopping: the version builds again at next start
            error = (
                exc
                if isinstance(exc, errors.ModelhostError)
                else errors.EnvironmentFailed(f"The environment could not be built: {exc!r}")
            )
            if not isinstance(exc, errors.ModelhostError):
                logger.exception("environment build of version %s failed", version.id)
            await asyncio.to_thread(self._failed_build, version, log, error)
        finally:
            self._tasks.pop(version.id, None)
            self.wake()

    def _failed_build(self, version: Version, log: _BuildLog, error: errors.ModelhostError) -> None:
        log.flush()
        current = self.repo.get_version_by_id(version.id)
        if current is None:
            return
        if not log.shared:  # a follower: the leader's own build decides the version's status
            logger.error("environment of version %s failed here: %s", version.id, error.message)
            self._failed[version.id] = error
        elif current.status == "building":
            self.repo.finish_build(
                version.id,
                status="failed",
                log=current.build_log + f"Failed:\n{error.message}\n",
                failure=BuildFailure("environment", error.message),
            )
        else:
            self.repo.append_build_log(version.id, f"Rebuild failed: {error.message}\n")
            self._failed[version.id] = error

    def _build_now(self, version: Version, log: _BuildLog) -> None:
        settings = self.settings
        deadline = uvenv.Deadline.after(settings, self._stopping)
        if version.interpreter and version.python_version:
            python = uvenv.Python(version.interpreter, version.python_version)
        else:
            python = uvenv.find_python(settings, None)
        lock = version.environment_lock
        if lock is None:
            lock = self._resolve(version, python, deadline, log)
        else:
            log(f"Installing from the stored lock: {_listing(lock)}")
        key = uvenv.environment_key(lock, python)
        if key != version.environment_hash:  # recorded first, so prune never takes it away
            self.repo.update_version(version.id, environment_hash=key)
        started = time.monotonic()
        path, cached = uvenv.ensure_environment(
            settings, lock, python, deadline=deadline, log=log.tool
        )
        log(
            f"Environment {key[:12]} {'found in the cache' if cached else 'built'} in "
            f"{time.monotonic() - started:.2f} s: {path}"
        )
        log.flush()
        self._built[version.id] = str(path)

    def _resolve(
        self, version: Version, python: uvenv.Python, deadline: uvenv.Deadline, log: _BuildLog
    ) -> str:
        workdir = self.workdir(version)
        if not workdir.is_dir():
            self.store.extract(version.bundle_sha256, workdir)
        declared = environments.requirements_of(workdir)
        if declared is None:
            raise errors.EnvironmentFailed(
                "The project has no requirements.txt and no dependencies in pyproject.toml."
            )
        source, text = declared
        requirements = workdir / "requirements.txt"
        scratch: Path | None = None
        if source != "requirements.txt":
            scratch = settings_tmp(self.settings) / f"requirements-{version.id}.txt"
            scratch.write_text(text)
            requirements = scratch
        log(f"Resolving {source} for Python {python.version} with uv")
        started = time.monotonic()
        try:
            lock = uvenv.compile_lock(
                self.settings, requirements, python, deadline=deadline, log=log.tool, cwd=workdir
            )
        finally:
            if scratch is not None:
                scratch.unlink(missing_ok=True)
        log(f"Locked in {time.monotonic() - started:.2f} s: {_listing(lock)}")
        self.repo.update_version(version.id, environment_lock=lock)
        return lock


def settings_tmp(settings: Settings) -> Path:
    scratch = settings.home_path / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def _listing(lock: str) -> str:
    return ", ".join(uvenv.pins(lock)) or "(no packages)"
