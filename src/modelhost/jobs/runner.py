"""The run loop inside ``modelhost serve``: fires due schedules, starts queued runs as
processes, kills the ones cancelled or past their timeout, records outcomes, and publishes
the result of a successful run that asks for it. Such a run ends with its version: the loop
gives it the version's outcome once the reconciler has recorded one.

Each run is a process in its own session (so killing its group also kills what it started),
in the run's own copy of the project, with stdout and stderr appended to its log. Like the
reconciler, the loop logs an exception and goes on; it never dies of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from modelhost import errors, events
from modelhost.builder import environments, uvenv
from modelhost.db.repo import Run
from modelhost.errors import ModelhostError
from modelhost.jobs.scheduler import fire_due, pause_denied
from modelhost.operations import Services
from modelhost.operations import runs as run_ops
from modelhost.operations.audit import record
from modelhost.sandbox import Confinement, innermost_pid

logger = logging.getLogger(__name__)

#: Time a cancelled or timed-out run gets between SIGTERM and SIGKILL.
KILL_GRACE_SECONDS = 5.0
INTERRUPTED = "Interrupted: the server stopped during the run, so its outcome is unknown."


@dataclass
class _Execution:
    process: asyncio.subprocess.Process
    cancelled: bool = False
    timed_out: bool = False
    killer: asyncio.Task[None] | None = field(default=None, repr=False)


class Jobs:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[str, _Execution] = {}  # run id -> its process, once started
        self._claimed: set[str] = set()  # runs this server took, from claim to outcome
        self._tasks: set[asyncio.Task[None]] = set()
        self._recovered = False
        self._stopping = threading.Event()  # ends an environment build when the server stops

    # ------------------------------------------------------------------ driving

    def wake(self) -> None:
        """Ask for a tick now; safe from any thread (API routes run in a thread pool)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._wake.set)

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await self.tick()
            except Exception:
                logger.exception("run loop tick failed; trying again on the next one")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), self.services.settings.scheduler_interval_seconds
                )
            self._wake.clear()

    def recover(self) -> list[Run]:
        """Fail the runs a previous server left running; they never run (or publish) again.
        A run that had published waits for its version, like any other (:meth:`settle`)."""
        interrupted = []
        for run in self.services.repo.list_runs(statuses=("running",)):
            if run.id in self._claimed:
                continue  # this server's own, still going (it led before, and leads again)
            if run.published_version_id is not None:
                continue  # its command ended before it published; its version decides
            if run.pid is not None and _is_run_process(run.pid, run.id):
                _signal_group(run.pid, signal.SIGKILL)  # left behind by a server killed hard
            if self.services.repo.finish_run(run.id, "failed", INTERRUPTED):
                interrupted.append(run)
        return interrupted

    async def tick(self) -> None:
        services = self.services
        if not services.leading():  # the leader fires schedules and runs (one per database)
            self._recovered = False  # leading again later, first fail what another leader left
            return
        if not self._recovered:  # first, before any run of this server is "running"
            await asyncio.to_thread(self.recover)
            self._recovered = True
        await asyncio.to_thread(fire_due, services, services.clock())
        running = await asyncio.to_thread(services.repo.list_runs, statuses=("running",))
        for run in running:
            execution = self._running.get(run.id)
            if run.cancel_requested and execution is not None and not execution.cancelled:
                execution.cancelled = True
                self._kill(execution)
        waiting = [r for r in running if r.published_version_id and r.id not in self._claimed]
        if waiting:
            await asyncio.to_thread(self.settle, waiting)
        free = services.settings.max_concurrent_runs - len(self._claimed)
        if free <= 0:
            return
        queued = await asyncio.to_thread(services.repo.list_runs, statuses=("queued",))
        for run in list(reversed(queued))[:free]:  # oldest first
            if await asyncio.to_thread(services.repo.start_run, run.id):
                self._claimed.add(run.id)
                self._spawn(self._execute(run))

    def settle(self, waiting: list[Run]) -> None:
        """Finish the runs that published and wait for their version, once it has loaded
        (``succeeded``) or failed to (``failed``, with why: the log says it too)."""
        for run in waiting:
            outcome = run_ops.published_outcome(self.services, run)
            if outcome is None:
                continue  # still building
            status, message = outcome
            if status != "succeeded":  # a success is told by the run's outcome alone
                path = run_ops.log_path(self.services, run.id)
                if path.parent.is_dir():
                    with path.open("ab") as log:
                        _note(log, message)
            self.services.repo.finish_run(run.id, status, message, 0)

    async def close(self) -> None:
        """Kill every run in progress (the server is stopping) and record it as interrupted."""
        self._stopping.set()
        for run_id, execution in list(self._running.items()):
            _signal_group(execution.process.pid, signal.SIGKILL)
            self.services.repo.finish_run(run_id, "failed", INTERRUPTED)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ one run

    async def _execute(self, run: Run) -> None:
        try:
            await self._execute_claimed(run)
        finally:
            self._claimed.discard(run.id)

    async def _execute_claimed(self, run: Run) -> None:
        path = run_ops.log_path(self.services, run.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as log:
            code: int | None = None
            try:
                status, message, code = await self._run(run, log)
            except Exception as exc:  # never leave a run "running" behind
                logger.exception("run %s failed in modelhost", run.id)
                status, message = "failed", f"modelhost could not run it: {type(exc).__name__}."
            if status != "running":  # a published version was said as it happened
                _note(log, message)
        if status != "running":  # else its version decides, in a later tick (settle)
            await asyncio.to_thread(self.services.repo.finish_run, run.id, status, message, code)
        await asyncio.to_thread(
            shutil.rmtree, run_ops.workdir(self.services, run.id), ignore_errors=True
        )

    async def _run(self, run: Run, log: IO[bytes]) -> tuple[str, str, int | None]:
        """The run's outcome: its status, message and exit code; ``running`` when it
        published a version, whose outcome becomes the run's."""
        services = self.services
        command = json.loads(run.command)
        work = run_ops.workdir(services, run.id)
        action = "schedule" if run.schedule_id else "run"
        refusal = await asyncio.to_thread(
            run_ops.creator_refusal, services, run.owner_id, run.model_id, action
        )
        if refusal is not None:  # checked before any secret is decrypted for it
            message = await asyncio.to_thread(self._denied, run, refusal)
            return "denied", message, None
        try:
            if not work.is_dir():
                await asyncio.to_thread(services.store.extract, run.bundle_sha256, work)
            python = await asyncio.to_thread(self._isolated_python, run, work, log)
            argv, path_dir = environments.run_command(services.settings, command, python)
            env, network = await asyncio.to_thread(self._environment, run, path_dir)
        except ModelhostError as exc:
            return "failed", f"Could not start: {exc.message}", None
        _note(log, f"run {run.id}: {shlex.join(command)} (as {shlex.join(argv)})")
        if "/" not in argv[0] and shutil.which(argv[0], path=env.get("PATH")) is None:
            # said here: inside a sandbox the failure would only be an exit status
            return "failed", _cannot_start(command[0], os.strerror(errno.ENOENT)), None
        confinement = Confinement(
            workdir=work,
            owner=run.model_id or run.id,
            writable=True,
            programs=(argv[0], *((python,) if python else ())),
            network=network,
        )
        await asyncio.to_thread(services.sandbox.prepare, confinement)
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *services.sandbox.command(argv, confinement),
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return "failed", _cannot_start(command[0], exc.strerror or str(exc)), None
        execution = self._running[run.id] = _Execution(process)
        try:
            await asyncio.to_thread(services.repo.set_run_pid, run.id, process.pid)
            try:
                code = await asyncio.wait_for(process.wait(), run.timeout_seconds)
            except asyncio.TimeoutError:
                execution.timed_out = True
                self._kill(execution)
                code = await process.wait()
            code = services.sandbox.exit_code(code)
        finally:
            _signal_group(process.pid, signal.SIGKILL)  # whatever it left running
            if execution.killer is not None:
                execution.killer.cancel()
            self._running.pop(run.id, None)
        took = f"after {time.monotonic() - started:.1f} s"
        if execution.cancelled:
            return "cancelled", f"Cancelled {took}.", code
        if execution.timed_out:
            return "failed", f"Timed out {took} (timeout {run.timeout_seconds:g} s); killed.", code
        if code < 0:
            return "failed", f"Killed by signal {-code} {took}.", code
        if code != 0:
            return "failed", f"Exited with status {code} {took}.", code
        if run.model_id is None:
            return "succeeded", f"Exited with status 0 {took}.", code
        _note(log, f"Exited with status 0 {took}; publishing the run's directory.")
        try:
            version = await asyncio.to_thread(run_ops.publish_result, services, run)
        except ModelhostError as exc:
            return "failed", f"Exited with status 0 {took}, but publishing failed: {exc.message}", 0
        _note(
            log,
            f"Published version {version.number} ({run.file}:{run.function}); the run ends "
            "once it has loaded or failed to.",
        )
        return "running", "", 0

    def _isolated_python(self, run: Run, work: Path, log: IO[bytes]) -> str | None:
        """The interpreter of the environment the run asked for (``run.environment``), built
        or taken from the cache versions share; None for the server's Python. By default, as
        for a publish, a project that declares its dependencies gets its isolated environment,
        so the version a run publishes starts in the environment it was trained in."""
        settings = self.services.settings
        declared = environments.requirements_of(work)
        kind = environments.choose(run.environment, "python", declared is not None)
        if kind == environments.SERVER:
            return None
        deadline = uvenv.Deadline.after(settings, self._stopping)
        started = time.monotonic()
        if kind == environments.ISOLATED:
            assert declared is not None
            python = uvenv.find_python(settings, None)
            lock = self._lock(run, work, declared, python, deadline, log)
            what = f"isolated, from {declared[0]}"
        else:
            named = self.services.repo.get_environment(kind)
            if named is None:
                raise errors.EnvironmentNotFound(
                    f"There is no environment '{kind}' any more; 'modelhost envs list' shows "
                    "the ones there are."
                )
            if named.kind == environments.R:
                raise errors.BadRequest(
                    f"The environment '{kind}' is an R library, which R versions use; runs "
                    "run in server, isolated or a Python environment."
                )
            python = uvenv.find_python(settings, named.interpreter)
            lock = named.lock
            what = f"{kind} revision {named.revision}"
        found, cached = uvenv.ensure_environment(
            settings, lock, python, deadline=deadline, log=_noter(log)
        )
        how = "from the cache" if cached else "built"
        _note(
            log,
            f"environment: {what} ({', '.join(uvenv.pins(lock)) or 'no packages'}), {how} "
            f"in {time.monotonic() - started:.1f} s",
        )
        return str(found)

    def _lock(
        self,
        run: Run,
        work: Path,
        declared: tuple[str, str],
        python: uvenv.Python,
        deadline: uvenv.Deadline,
        log: IO[bytes],
    ) -> str:
        """The project's requirements resolved into a lock with hashes."""
        settings = self.services.settings
        source, text = declared
        requirements = work / "requirements.txt"
        scratch: Path | None = None
        if source != "requirements.txt":
            scratch = settings.home_path / "tmp" / f"requirements-run-{run.id}.txt"
            scratch.parent.mkdir(parents=True, exist_ok=True)
            scratch.write_text(text)
            requirements = scratch
        _note(log, f"resolving {source} for Python {python.version} with uv")
        try:
            return uvenv.compile_lock(
                settings, requirements, python, deadline=deadline, log=_noter(log), cwd=work
            )
        finally:
            if scratch is not None:
                scratch.unlink(missing_ok=True)

    def _denied(self, run: Run, refusal: str) -> str:
        """A run whose creator may no longer run it: its schedule pauses, as at a denied
        tick, and the audit log says so either way. Returns the run's message."""
        services = self.services
        schedule = services.repo.get_schedule(run.schedule_id) if run.schedule_id else None
        if schedule is not None:
            return pause_denied(services, schedule, refusal)
        model = services.repo.find_model(run.model_id) if run.model_id else None
        record(
            services,
            None,
            events.RUN,
            model=model,
            outcome="denied",
            detail={"run_id": run.id, "reason": refusal},
            actor_name="modelhost",
        )
        logger.warning("run %s denied: %s", run.id, refusal)
        return f"Denied: {refusal}."

    def _environment(self, run: Run, path_dir: str | None) -> tuple[dict[str, str], bool]:
        """Like an instance's (:class:`~modelhost.serving.children.Children`); and whether
        the run may reach the network (its model's setting)."""
        services = self.services
        model = services.repo.find_model(run.model_id) if run.model_id else None
        env = services.children.env(
            home=run_ops.workdir(services, run.id),
            model=model,
            env_vars=services.repo.list_env(model.id) if model is not None else (),
            ours={"MODELHOST_RUN_ID": run.id},
            path_prefix=path_dir,
        )
        return env, model.network if model is not None else True

    def _kill(self, execution: _Execution) -> None:
        """SIGTERM the run's own process group, then SIGKILL everything after a grace
        period."""
        pid = execution.process.pid

        async def kill() -> None:
            _signal_group(_code_group(pid), signal.SIGTERM)
            await asyncio.sleep(KILL_GRACE_SECONDS)
            _signal_group(pid, signal.SIGKILL)

        execution.killer = asyncio.get_running_loop().create_task(kill())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _cannot_start(program: str, reason: str) -> str:
    return (
        f"Could not start '{program}': {reason}. Give a program that exists on the server, "
        "such as python."
    )


def _noter(log: IO[bytes]) -> Callable[[str], None]:
    """Where uv's own output goes: the run's log, line by line, as it comes."""

    def write(line: str) -> None:
        log.write(f"{line}\n".encode())
        log.flush()

    return write


def _note(log: IO[bytes], text: str) -> None:
    log.write(f"[modelhost] {text}\n".encode())
    log.flush()


def _is_run_process(pid: int, run_id: str) -> bool:
    """Whether ``pid`` is still that run's process (its environment names the run), so a
    recycled pid is never killed by mistake. Linux only; elsewhere, nothing is killed."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"MODELHOST_RUN_ID={run_id}".encode() in environ.split(b"\0")


def _code_group(pid: int) -> int:
    """The process group of the run's own command, whose process is ``pid`` or, sandboxed,
    runs below bubblewrap in a session of its own: a signal to bubblewrap's group never
    reaches it, and bubblewrap's end kills it at once, with no chance to clean up."""
    inner = innermost_pid(pid)
    if inner is None:
        return pid
    try:
        return os.getpgid(inner)
    except ProcessLookupError:
        return pid


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
