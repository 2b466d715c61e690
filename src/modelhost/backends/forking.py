"""Fork servers: copy-on-write instances of a Python version.

A version's first instance starts a fork server: the worker in its fork-server mode, in the
same sandbox an instance gets (same uid, namespaces and limits). It imports the script once and
then forks each of the version's instances, which share the imported model's memory pages
until they write to them. The server hands each fork its end of the instance's connection and
its log over a Unix socket (SCM_RIGHTS); the fork server reports each fork's pid and exit.

The server sees a forked instance as it sees any other: it measures its memory and kills it
through a pidfd of the process (its pid on this machine is found from the fork server's
children and their ``NSpid``), and learns its exit code from the fork server. When the fork
server dies its instances die with it (they are in its PID namespace) and are replaced; an
instance still waiting for its fork starts fresh instead, and the next instance starts a new
fork server. A script that starts threads at import cannot be forked safely: its fork server
says so and exits, and the version's instances start fresh.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelhost import pidfiles
from modelhost.backends.base import InstanceSpec, spec_for_worker, unusable_variable
from modelhost.backends.cpu_limit import Affinity, CpuLimit
from modelhost.sandbox import RUNTIME_DIR, Confinement, Sandbox, innermost_pid

logger = logging.getLogger(__name__)

WORKER = RUNTIME_DIR / "worker.py"
#: environment variables that differ between the instances of one fork server
PER_INSTANCE_ENV = ("MODELHOST_INSTANCE_ID",)
#: how long a fork server with no instances is kept for the next one (a replacement, which
#: the reconciler starts at once); what the script started at import ends with it
IDLE_SECONDS = 5.0
_STOP_GRACE_SECONDS = 5.0
_MAX_MESSAGE = 1 << 20


#: why the instances of a script that starts threads at import start fresh
UNFORKABLE = (
    "its script starts threads at import, which a fork would not copy (the version's fork "
    "server imported it once to find out; publish with --no-fork, fork=False in the Python "
    "client, to skip that import)"
)


def fork_key(spec: InstanceSpec) -> str:
    """What instances must share to be forked from one fork server: everything that the
    import or the sandbox could depend on. A restart (a new generation) gets a new one."""
    env = {k: v for k, v in spec.env.items() if k not in PER_INSTANCE_ENV}
    return json.dumps(
        [
            spec.version_id,
            spec.generation,
            str(spec.workdir),
            spec.file,
            spec.function,
            spec.interpreter,
            spec.concurrency,
            spec.log_requests,
            spec.network,
            spec.batch,
            spec.cpus,
            sorted(env.items()),
        ]
    )


def host_pid(parent: int, inner: int) -> int | None:
    """The pid on this machine of ``parent``'s child whose pid in its own namespace is
    ``inner`` (the last number of its ``NSpid``), or None when it cannot be found."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and int(line.split()[-1]) == inner:
                return int(child)
    return None


@dataclass
class Forked:
    """A process a fork server forked for an instance."""

    #: the instance's process name (``instance-<id>``): its cgroup's
    name: str = ""
    #: its pid in the fork server's namespace, then on this machine, and a pidfd to signal it
    inner_pid: int | None = None
    pid: int | None = None
    pidfd: int | None = None
    returncode: int | None = None
    #: why it was killed, when the server killed it for a reason of the fork server's
    cause: str = ""

    def __post_init__(self) -> None:
        self.done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    def finish(self, code: int | None) -> None:
        """It exited with ``code``; None: it was never forked, the instance starts fresh."""
        if self.done.done():
            return
        self.returncode = code
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.done.set_result(code)

    def kill(self) -> None:
        if self.pidfd is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)


@dataclass
class _Request:
    instance_id: str
    env: Mapping[str, str]
    connection: socket.socket
    log_fd: int
    forked: Forked
    #: called when the instance must start fresh after all, with the reason
    fall_back: Callable[[str], None]
    #: called with the fork server's LOAD_FAILED message (the script does not load)
    load_failed: Callable[[dict[str, Any]], None]


class ForkServer:
    """One fork server: the process, the control socket and the instances it forked."""

    def __init__(
        self,
        key: str,
        spec: InstanceSpec,
        confinement: Confinement,
        sandbox: Sandbox,
        pids: Path | None,
        on_end: Callable[[ForkServer], None],
        cpu: CpuLimit | None = None,
    ) -> None:
        self.key = key
        #: the fork server gets the tier's CPUs, and each fork gets them again on its own
        self._cpu: CpuLimit = cpu if cpu is not None else Affinity("not configured")
        self.spec = spec
        self._confinement = confinement
        self._sandbox = sandbox
        self._pids = pids
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._process: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        #: None until it answers; then "ready", "unforkable" (threads) or "failed"
        self.outcome: str | None = None
        self.ended = False
        self._waiting: list[_Request] = []  # sent once it is ready
        self._sent: dict[str, _Request] = {}  # by instance id, until forked
        self._children: dict[int, Forked] = {}  # by pid in its namespace
        self._server_pid: int | None = None  # the fork server's own pid on this machine
        self._idle: asyncio.TimerHandle | None = None
        self._name = f"forkserver-{spec.instance_id}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def pid(self) -> int | None:
        """The fork server's pid on this machine (inside a sandbox, it sees another)."""
        process = self._process
        if self._server_pid is None and process is not None and process.returncode is None:
            self._server_pid = innermost_pid(process.pid)
        return self._server_pid

    @property
    def usable(self) -> bool:
        """Whether it can take fork requests (it is not gone, nor being stopped)."""
        return not self.ended and (self._control is not None or self._process is None)

    @property
    def busy(self) -> bool:
        return bool(self._waiting or self._sent or self._children)

    async def launch(self) -> None:
        """Start the fork server in the instance sandbox; its output goes to the log of the
        instance that started it, which thus shows the import."""
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        unusable = unusable_variable(spec.env)
        if unusable is not None:  # its instances start fresh, and fail saying why
            self._end(f"the fork server could not be started (variable {unusable})")
            return
        control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker_spec = spec_for_worker(spec)
        argv = [spec.interpreter, "-u", str(WORKER), "--fork-server-fd", str(theirs.fileno())]
        argv = self._sandbox.command([*argv, "--spec", json.dumps(worker_spec)], self._confinement)
        try:
            argv = self._cpu.command(self._name, spec.cpus, argv)  # a fork inherits an affinity
            with spec.log_path.open("ab") as log:
                self._process = await asyncio.create_subprocess_exec(
                    *argv,
                    pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=dict(spec.env),
                    cwd=spec.workdir,
                    start_new_session=True,
                )
        except OSError as exc:
            logger.warning("could not start a fork server: %s", exc)
            control.close()
            theirs.close()
            await self._cpu.release(self._name)
            self._end(f"the fork server could not be started ({exc})")
            return
        theirs.close()
        control.setblocking(False)
        self._control = control
        if self._pids is not None:
            pidfiles.record(self._pids, self._name, self._process.pid)
        self._loop.add_reader(control.fileno(), self._on_readable)
        self._loop.create_task(self._watch_exit())

    # ------------------------------------------------------------------ forking

    def fork(
        self,
        instance_id: str,
        env: Mapping[str, str],
        connection: socket.socket,
        log_path: Path,
        fall_back: Callable[[str], None],
        load_failed: Callable[[dict[str, Any]], None],
    ) -> Forked:
        """Ask for an instance; the answer comes as the returned :class:`Forked`'s pid, or a
        call of ``fall_back`` (start it fresh) or of ``load_failed``."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        forked = Forked(name=f"instance-{instance_id}")
        request = _Request(instance_id, env, connection, log_fd, forked, fall_back, load_failed)
        if self.ended:  # it could not be started, or died since: the instance starts fresh
            self._loop.call_soon(self._fall_back, request, "the fork server is gone")
        elif self.outcome == "ready":
            self._send(request)
        else:
            self._waiting.append(request)
        return request.forked

    def locate(self, forked: Forked, inner: int) -> None:
        """Note a forked instance's pid in the fork server's namespace, its pid on this
        machine and a pidfd of it (when its READY comes before the fork server's report, the
        instance says it first)."""
        if forked.inner_pid is not None:
            return
        forked.inner_pid = inner
        server = self.pid
        forked.pid = host_pid(server, inner) if server is not None else inner
        if forked.pid is not None:
            with contextlib.suppress(OSError):
                forked.pidfd = os.pidfd_open(forked.pid)
            # out of the fork server's cgroup into its own, before it takes a call
            self._cpu.place(forked.name, forked.pid, self.spec.cpus)

    def kill_child(self, forked: Forked) -> None:
        """End a forked instance: through its pidfd, and through the fork server, which can
        always tell its own children (a pidfd may not have been found)."""
        forked.kill()
        if forked.inner_pid is not None and forked.returncode is None:
            self._message({"kill": forked.inner_pid})

    def _send(self, request: _Request) -> None:
        self._sent[request.instance_id] = request
        message = {"fork": request.instance_id, "env": dict(request.env)}
        fds = array.array("i", [request.connection.fileno(), request.log_fd])
        sent = self._message(message, fds)
        os.close(request.log_fd)
        request.log_fd = -1
        if not sent:
            self._sent.pop(request.instance_id, None)
            self._fall_back(request, "the fork server did not take the request")

    def _message(self, message: dict[str, Any], fds: array.array[int] | None = None) -> bool:
        if self._control is None:
            return False
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)] if fds is not None else []
        try:
            self._control.sendmsg([json.dumps(message).encode()], ancillary)
        except OSError as exc:
            logger.warning("fork server %s: %s", self._name, exc)
            return False
        return True

    # ------------------------------------------------------------------ what it says

    def _on_readable(self) -> None:
        assert self._control is not None
        while True:
            try:
                data = self._control.recv(_MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close_control()
                return
            try:
                message = json.loads(data)
            except ValueError:
                logger.error("fork server %s sent garbage; ending it", self._name)
                self.kill()
                return
            self._on_message(message)

    def _on_message(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self.pid  # noqa: B018 - noted while it surely runs
            if int(message["ready"].get("threads", 1)) > 1:
                self.outcome = "unforkable"
                self._fall_back_all(UNFORKABLE)
                return
            self.outcome = "ready"
            waiting, self._waiting = self._waiting, []
            for request in waiting:
                self._send(request)
        elif "load_failed" in message:
            self.outcome = "failed"
            for request in [*self._waiting, *self._sent.values()]:
                self._close_request(request)
                request.load_failed(message["load_failed"])
            self._waiting.clear()
            self._sent.clear()
        elif "forked" in message:
            sent = self._sent.pop(str(message["forked"]), None)
            if sent is None:
                return
            inner = int(message["pid"])
            forked = sent.forked
            self.locate(forked, inner)
            self._children[inner] = forked
            sent.connection.close()
        elif "fork_failed" in message:
            failed = self._sent.pop(str(message["fork_failed"]), None)
            if failed is not None:
                self._fall_back(failed, f"the fork server could not fork ({message['message']})")
        elif "exited" in message:
            child = self._children.pop(int(message["exited"]), None)
            if child is not None:
                child.finish(int(message["code"]))
            self._maybe_idle()

    # ------------------------------------------------------------------ ending

    def _fall_back(self, request: _Request, reason: str) -> None:
        request.forked.finish(None)
        request.fall_back(reason)  # the instance still holds its connection: it starts fresh
        self._close_request(request, keep_connection=True)

    def _fall_back_all(self, reason: str) -> None:
        for request in [*self._waiting, *self._sent.values()]:
            self._fall_back(request, reason)
        self._waiting.clear()
        self._sent.clear()

    @staticmethod
    def _close_request(request: _Request, keep_connection: bool = False) -> None:
        if request.log_fd >= 0:
            os.close(request.log_fd)
            request.log_fd = -1
        if not keep_connection:
            request.connection.close()

    def _close_control(self) -> None:
        if self._control is not None:
            self._loop.remove_reader(self._control.fileno())
            self._control.close()
            self._control = None

    async def _watch_exit(self) -> None:
        assert self._process is not None
        code = self._sandbox.exit_code(await self._process.wait())
        if self._pids is not None:
            pidfiles.forget(self._pids, self._name)
        await self._cpu.release(self._name)
        if self._control is not None:  # what it said before it died still counts
            self._on_readable()
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self._end(f"its fork server {how}")

    def _end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        if self._idle is not None:
            self._idle.cancel()
        self._close_control()
        self._fall_back_all(reason)
        for child in self._children.values():  # they were in its namespace (or are orphans)
            child.cause = reason
            child.kill()
            child.finish(-signal.SIGKILL)
        self._children.clear()
        self._on_end(self)

    def _maybe_idle(self) -> None:
        if not self.busy and not self.ended and self._idle is None:
            self._idle = self._loop.call_later(IDLE_SECONDS, self.stop_soon)

    def stop_soon(self) -> None:
        """Stop it if it has no instances (a new one may have come since)."""
        self._idle = None
        if not self.busy:
            self._loop.create_task(self.stop())

    def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Stop it: closing its socket tells it to exit; it is killed if it does not."""
        self._close_control()
        if self._process is None:
            self._end("stopped")
            return
        try:
            await asyncio.wait_for(self._process.wait(), _STOP_GRACE_SECONDS)
        except asyncio.TimeoutError:
            self.kill()
            await self._process.wait()
        self._end("stopped")
