"""The local backend: each instance is a worker process on this machine, talked to over a
socketpair with the framed protocol. No ports are opened for instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from modelhost import errors, json_conversions, pidfiles
from modelhost.backends.base import (
    Instance,
    InstanceSpec,
    InstanceState,
    server_line,
    spec_for_worker,
    unusable_variable,
    unusable_variable_message,
)
from modelhost.backends.channel import CallChannel, Connection
from modelhost.backends.cpu_limit import Affinity, CpuLimit
from modelhost.backends.forking import UNFORKABLE, Forked, ForkServer, fork_key
from modelhost.runtime import protocol
from modelhost.sandbox import RUNTIME_DIR, Confinement, Sandbox, innermost_pid

logger = logging.getLogger(__name__)

WORKER = RUNTIME_DIR / "worker.py"
WORKER_R = WORKER.with_name("worker.R")
#: The worker loads it from next to the runtime directory (the client uses it too).
JSON_CONVERSIONS = Path(json_conversions.__file__)
_EXIT_GRACE_SECONDS = 5.0
#: how long an instance that closed its connection has to exit before it is killed
_EXIT_ON_CLOSE_SECONDS = 1.0
#: the most a connection to an R instance's port may send before its first frame is whole
_FIRST_FRAME_BYTES = 1 << 20
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def tail_lines(path: Path, count: int = 30) -> list[str]:
    """The last ``count`` lines of a log file (reads only its end)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-count:]


def confinement_of(spec: InstanceSpec) -> Confinement:
    """An instance's sandbox: its working copy read-only, its interpreter and the worker."""
    return Confinement(
        workdir=spec.workdir,
        owner=spec.model_id,
        programs=(spec.interpreter,),
        read_only=(RUNTIME_DIR, JSON_CONVERSIONS, *spec.libraries),
        network=spec.network,
    )


class LocalInstance(CallChannel):
    """A worker process and the connection to it; calls are matched to answers by id."""

    def __init__(
        self,
        spec: InstanceSpec,
        on_change: Callable[[], None],
        sandbox: Sandbox,
        pids: Path | None = None,
        cpu: CpuLimit | None = None,
    ) -> None:
        super().__init__(spec, InstanceState.STARTING)
        self._sandbox = sandbox
        #: how it gets its hardware tier's CPUs (see :mod:`modelhost.backends.cpu_limit`)
        self._cpu: CpuLimit = cpu if cpu is not None else Affinity("not configured")
        #: where the process is recorded while it runs (see :mod:`modelhost.pidfiles`)
        self._pids = pids
        self._worker_pid: int | None = None
        self.exit_code: int | None = None
        self._stop_requested = False
        self._announced = False
        self._nonce = secrets.token_hex(8)
        self._on_change = on_change
        self._process: asyncio.subprocess.Process | None = None
        #: set instead of ``_process`` while the instance is forked by a fork server
        self._forked: Forked | None = None
        self._fork_server: ForkServer | None = None
        #: set when an instance the fork server did not fork was started fresh (or not)
        self._respawned = asyncio.Event()
        self._load_timer: asyncio.TimerHandle | None = None
        self._exited = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def launch(
        self, load_timeout: float, fork_server: ForkServer | None = None, fresh: str = ""
    ) -> None:
        """Spawn the worker and connect to it: a socketpair for Python, loopback TCP for R
        (R cannot use an inherited socket), where the worker proves itself with a nonce. With
        ``fork_server`` the worker is forked from it instead (and spawned fresh if it cannot
        be); ``fresh`` says why a Python instance that could be forked is not."""
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log(f"starting instance {spec.instance_id} of version {spec.version_number}")
        unusable = unusable_variable(spec.env)
        if unusable is not None:
            message = unusable_variable_message(spec.env, unusable)
            self.log(f"instance {spec.instance_id} load failed: {message}")
            self._fail(message)
            self._exited.set()
            return
        if spec.runtime == "r" or fork_server is None:
            if fresh:
                self.log(f"instance {spec.instance_id} starts fresh: {fresh}")
            await self._spawn(load_timeout)
            return
        parent, child = socket.socketpair()
        self._fork_server = fork_server
        self._load_timer = self._loop.call_later(load_timeout, self._load_timed_out, load_timeout)
        self._forked = fork_server.fork(
            spec.instance_id,
            spec.env,
            child,
            spec.log_path,
            fall_back=lambda reason: self._spawn_task(self._fall_back(reason, child, load_timeout)),
            load_failed=self._fork_server_load_failed,
        )
        self._loop.create_task(self._watch_exit())
        self._transport, _ = await self._loop.create_unix_connection(
            lambda: Connection(self), sock=parent
        )

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._loop.create_task(coroutine)

    async def _fall_back(self, reason: str, child: socket.socket, load_timeout: float) -> None:
        """The fork server could not fork this instance: start it fresh, on the same
        connection."""
        try:
            if self.state is not InstanceState.STARTING:
                child.close()
                return
            self.log(f"instance {self.spec.instance_id} starts fresh: {reason}")
            if self._load_timer:
                self._load_timer.cancel()
            await self._spawn(load_timeout, child)
        finally:
            self._forked = None
            self._respawned.set()

    def _fork_server_load_failed(self, info: dict[str, object]) -> None:
        self._on_frame(protocol.LOAD_FAILED, json.dumps(info).encode())
        if self._forked is not None:
            self._forked.finish(1)

    async def _spawn(self, load_timeout: float, child: socket.socket | None = None) -> None:
        """Start the worker as a process of its own (for a fall-back, on ``child``, the
        worker's end of the connection that is already made)."""
        spec = self.spec
        worker_spec = spec_for_worker(spec)
        parent: socket.socket | None = None
        if spec.runtime == "r":
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            listener.setblocking(False)
            port = listener.getsockname()[1]
            argv = [spec.interpreter, "--vanilla", str(WORKER_R), "--port", str(port)]
            keep: tuple[int, ...] = ()
        else:
            if child is None:
                parent, child = socket.socketpair()
            argv = [spec.interpreter, "-u", str(WORKER), "--fd", str(child.fileno())]
            keep = (child.fileno(),)
        argv = self._sandbox.command(
            [*argv, "--spec", json.dumps(worker_spec)], confinement_of(spec)
        )
        try:
            argv = self._cpu.command(f"instance-{spec.instance_id}", spec.cpus, argv)
            with spec.log_path.open("ab") as log:
                self._process = await asyncio.create_subprocess_exec(
                    *argv,
                    pass_fds=keep,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    # The nonce goes in the environment, which only this user can read
                    # (/proc/PID/environ), not on the command line, which everyone can.
                    env={**spec.env, "MODELHOST_INSTANCE_NONCE": self._nonce},
                    cwd=spec.workdir,
                    start_new_session=True,
                )
        except OSError as exc:
            for sock in (listener,) if spec.runtime == "r" else (parent, child):
                if sock is not None:
                    sock.close()
            self._fail(f"Could not start the instance with {spec.interpreter}: {exc}.")
            await self._cpu.release(f"instance-{spec.instance_id}")
            self._exited.set()
            return
        self._forked = None  # a fall-back: the exit watcher now waits on the process
        if self._pids is not None:
            pidfiles.record(self._pids, f"instance-{spec.instance_id}", self._process.pid)
        self._load_timer = self._loop.call_later(load_timeout, self._load_timed_out, load_timeout)
        if self._fork_server is None:
            self._loop.create_task(self._watch_exit())
        self._fork_server = None
        if spec.runtime == "r":
            self._loop.create_task(self._accept(listener))
        else:
            assert child is not None
            child.close()
            if parent is not None:
                self._transport, _ = await self._loop.create_unix_connection(
                    lambda: Connection(self), sock=parent
                )

    async def _accept(self, listener: socket.socket) -> None:
        """Take the R worker's connection: the one whose first frame carries this instance's
        nonce. The port is on loopback, where any process of the machine (a model's code
        too, while its network is on) can connect first; such a connection is closed and
        changes nothing, and the worker's own is still taken when it comes."""
        proven: asyncio.Future[tuple[socket.socket, list[tuple[int, bytes]], bytes]]
        proven = self._loop.create_future()
        candidates: set[asyncio.Task[None]] = set()

        async def take_all() -> None:
            while True:
                connection, _ = await self._loop.sock_accept(listener)
                task = self._loop.create_task(self._prove(connection, proven))
                candidates.add(task)
                task.add_done_callback(candidates.discard)

        taking = self._loop.create_task(take_all())
        exited = asyncio.ensure_future(self._exited.wait())
        try:
            either: set[asyncio.Future[Any]] = {proven, exited}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            taking.cancel()
            exited.cancel()
            for task in list(candidates):
                task.cancel()
            listener.close()
        if not proven.done() or proven.cancelled():
            return
        connection, frames, rest = proven.result()
        self._transport, reader = await self._loop.create_connection(
            lambda: Connection(self), sock=connection
        )
        for kind, payload in frames:
            self._on_frame(kind, payload)
        if rest:
            reader.data_received(rest)

    async def _prove(
        self,
        connection: socket.socket,
        proven: asyncio.Future[tuple[socket.socket, list[tuple[int, bytes]], bytes]],
    ) -> None:
        """Read ``connection``'s first frame; hand it on as the worker's if it carries the
        nonce, else close it."""
        decoder = protocol.FrameDecoder()
        received = 0
        frames: list[tuple[int, bytes]] = []
        try:
            connection.setblocking(False)
            while not frames and received <= _FIRST_FRAME_BYTES:
                data = await self._loop.sock_recv(connection, 65536)
                if not data:
                    break
                received += len(data)
                frames = decoder.feed(data)
            if frames and protocol.carries_nonce(*frames[0], self._nonce) and not proven.done():
                rest = decoder.rest()
                proven.set_result((connection, frames, rest))
                return
        except (OSError, protocol.ProtocolError):
            pass
        except asyncio.CancelledError:
            connection.close()
            raise
        connection.close()
        self.log("a process that is not this instance connected to its port; it was turned away")

    async def _watch_exit(self) -> None:
        if self._forked is not None:
            code = await self._forked.done
            if code is not None:
                self.exit_code = code
                await self._ended()
                return
            await self._respawned.wait()  # not forked after all: started fresh, or not at all
        # started as a process of its own (fresh, or after a fork that did not happen)
        if self._process is None:
            await self._ended()
            return
        self.exit_code = self._sandbox.exit_code(await self._process.wait())
        if self._pids is not None:
            pidfiles.forget(self._pids, f"instance-{self.spec.instance_id}")
        await self._ended()

    async def _ended(self) -> None:
        """Its process is gone: say so, and remove its cgroup (if it had one)."""
        self._on_gone()
        try:
            await self._cpu.release(f"instance-{self.spec.instance_id}")
        finally:
            self._exited.set()

    def _load_timed_out(self, load_timeout: float) -> None:
        if self.state is InstanceState.STARTING:
            self._fail(
                f"The instance did not report ready within {load_timeout:g} s (setting "
                "load_timeout_seconds); the script's import takes too long or hangs."
            )
            self.kill()

    def _fail(self, message: str) -> None:
        self.failure = message
        self.state = InstanceState.FAILED
        if self._load_timer:
            self._load_timer.cancel()
        self._on_change()

    def _on_gone(self) -> None:
        if self.state is InstanceState.STARTING:
            tail = "\n".join(tail_lines(self.spec.log_path, 20))
            self._fail(
                f"The instance exited (code {self.exit_code}) before it was ready. The end of "
                f"its log:\n{tail}"
            )
        elif self.state is not InstanceState.FAILED:
            if not self._stop_requested and self.exit_code is not None and not self._announced:
                self._announced = True
                code = self.exit_code
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                if self._forked is not None and self._forked.cause:
                    how += f" as {self._forked.cause}"
                self.log(f"instance {self.spec.instance_id} {how}; it will be replaced")
            self.state = InstanceState.EXITED
            self._on_change()
        self._fail_pending()

    def _on_connection_lost(self) -> None:
        if self.state is InstanceState.STARTING:
            return  # the exit watcher reports it, with the exit code and the whole log
        # The process is gone or closed its end; either way no answer will come. One that is
        # exiting by itself gets a moment to, so its log tells its own exit code (a kill at
        # once would report signal 9 for a function that called sys.exit).
        if self.state is InstanceState.READY:
            self._loop.call_later(_EXIT_ON_CLOSE_SECONDS, self.kill)
        self._on_gone()

    @property
    def instance_name(self) -> str:
        return self.spec.instance_id

    def _on_frame(self, kind: int, payload: bytes) -> None:
        if kind in (protocol.RESULT, protocol.ERROR):
            self._answer(kind, payload)
        elif kind == protocol.READY:
            if self._load_timer:
                self._load_timer.cancel()
            info = json.loads(payload)
            if self.spec.runtime == "r" and info.get("nonce") != self._nonce:
                self._fail("A process that is not this instance connected to its port.")
                self.kill()
                return
            self.signature = info.get("signature")
            schema = info.get("schema")
            self.schema = schema if isinstance(schema, dict) else None
            if self._forked is not None and self._fork_server is not None:
                self._fork_server.locate(self._forked, int(info["pid"]))
            if self.state is InstanceState.STARTING:
                self.state = InstanceState.READY
                self._on_change()
        elif kind == protocol.LOAD_FAILED:
            info = json.loads(payload)
            if self.spec.runtime == "r" and info.get("nonce") != self._nonce:
                self._fail("A process that is not this instance connected to its port.")
                self.kill()
                return
            detail = info.get("traceback") or ""
            self.failure_traceback = detail or None
            self._fail(info["message"] + ("\n" + detail if detail else ""))

    @property
    def forked(self) -> bool:
        """Whether it was forked from its version's fork server (not started fresh)."""
        return self._forked is not None and self._forked.inner_pid is not None

    @property
    def cpu_limit(self) -> dict[str, object] | None:
        """How it gets its hardware tier's CPUs (a cgroup, or cores); None without a tier."""
        return self._cpu.describe(f"instance-{self.spec.instance_id}", self.spec.cpus)

    @property
    def pid(self) -> int | None:
        """The worker's process id on this machine (inside a sandbox, the code sees another)."""
        if self._forked is not None:
            return self._forked.pid if self._forked.returncode is None else None
        if self._process is None:
            return None
        if self._worker_pid is None and self._process.returncode is None:
            self._worker_pid = innermost_pid(self._process.pid)
        return self._worker_pid or self._process.pid

    def log(self, message: str) -> None:
        """A line from the server about this instance, in the instance's own log."""
        with self.spec.log_path.open("ab") as log:
            log.write(server_line(message))

    def memory_mb(self) -> float | None:
        if self._forked is None and (self._process is None or self._process.returncode is not None):
            return None
        if self.pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.pid}/statm").read_text().split()
        except OSError:
            return None
        return int(fields[1]) * _PAGE_SIZE / 1e6

    def end(self, reason: str, message: str) -> None:
        self.ended_by = reason
        self.log(message)
        if self.state in (InstanceState.READY, InstanceState.STARTING):
            self.state = InstanceState.EXITED
        self.kill()
        self._on_change()

    def hand_over(self) -> socket.socket | None:
        """A duplicate of the connection to a ready Python instance, for a gateway process to
        send calls on; this process stops reading it (it still writes SHUTDOWN when stopping
        the instance). None if the instance cannot be handed over."""
        transport = self._transport
        if (
            self.state is not InstanceState.READY
            or transport is None
            or self.spec.runtime != "python"
        ):
            return None
        transport.pause_reading()
        original = transport.get_extra_info("socket")
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(original.fileno()))

    def take_back(self) -> None:
        """Read the connection again (a hand-over that did not go through)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def kill(self) -> None:
        if self._forked is not None:
            if self._fork_server is not None:
                if self._forked.inner_pid is None and self._fork_server.outcome is None:
                    self._fork_server.kill()  # its import hangs: this instance waits on it
                self._fork_server.kill_child(self._forked)
            return
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)

    async def stop(self, drain_timeout: float) -> None:
        """Let in-flight calls finish (up to ``drain_timeout``), then end the process."""
        if self.state in (InstanceState.READY, InstanceState.STARTING):
            self._stop_requested = True  # a stop on purpose, not a death to report
        if self.state in (InstanceState.READY, InstanceState.STARTING):
            self.state = InstanceState.STOPPING
        await self.drained(drain_timeout)
        if self._transport is not None and not self._transport.is_closing():
            self.flush()  # any call still gathered goes before the end
            self._transport.write(protocol.encode(protocol.SHUTDOWN))
        try:
            await asyncio.wait_for(self._exited.wait(), _EXIT_GRACE_SECONDS)
        except asyncio.TimeoutError:
            self.kill()
            await self._exited.wait()
        if self._transport is not None:
            self._transport.close()


class LocalBackend:
    """Supervises worker processes on this machine."""

    def __init__(
        self, sandbox: Sandbox, pids: Path | None = None, cpu: CpuLimit | None = None
    ) -> None:
        self._sandbox = sandbox
        #: how instances on a hardware tier get its CPUs: a cgroup or an affinity
        self.cpu: CpuLimit = cpu if cpu is not None else Affinity("not configured")
        #: where instance processes are recorded, so a start after a crash ends leftovers
        self._pids = pids
        self._instances: dict[str, LocalInstance] = {}
        self._listener: Callable[[], None] = lambda: None
        #: running fork servers by :func:`~modelhost.backends.forking.fork_key`
        self._fork_servers: dict[str, ForkServer] = {}
        #: keys whose script started threads at import: their instances start fresh
        self._unforkable: set[str] = set()

    def set_listener(self, listener: Callable[[], None]) -> None:
        self._listener = listener

    def _changed(self) -> None:
        self._listener()

    async def start(self, spec: InstanceSpec, load_timeout: float) -> LocalInstance:
        if not spec.workdir.is_dir():
            raise errors.InternalError(f"working copy {spec.workdir} is missing")
        await asyncio.to_thread(self._sandbox.prepare, confinement_of(spec))
        instance = LocalInstance(spec, self._changed, self._sandbox, self._pids, self.cpu)
        self._instances[spec.instance_id] = instance
        fork_server = await self._fork_server(spec)
        unforkable = fork_server is None and spec.fork and fork_key(spec) in self._unforkable
        await instance.launch(load_timeout, fork_server, UNFORKABLE if unforkable else "")
        return instance

    async def _fork_server(self, spec: InstanceSpec) -> ForkServer | None:
        """The fork server to fork this instance from, started if need be; None to start it
        fresh (R, a version published with fork off, a script that starts threads)."""
        if not spec.fork or spec.runtime != "python":
            return None
        key = fork_key(spec)
        if key in self._unforkable:
            return None
        server = self._fork_servers.get(key)
        if server is None or not server.usable:
            server = ForkServer(
                key,
                spec,
                confinement_of(spec),
                self._sandbox,
                self._pids,
                self._fork_server_ended,
                self.cpu,
            )
            self._fork_servers[key] = server
            await server.launch()
        return server

    def _fork_server_ended(self, server: ForkServer) -> None:
        if server.outcome == "unforkable":
            self._unforkable.add(server.key)
        if self._fork_servers.get(server.key) is server:
            del self._fork_servers[server.key]

    def fork_servers(self) -> list[ForkServer]:
        return list(self._fork_servers.values())

    async def stop(self, instance: Instance, drain_timeout: float) -> None:
        local = self._instances.pop(instance.spec.instance_id, None)
        if local is not None:
            await local.stop(drain_timeout)

    def instances(self) -> list[LocalInstance]:
        return list(self._instances.values())

    async def close(self) -> None:
        await asyncio.gather(
            *(self.stop(i, drain_timeout=2.0) for i in self.instances()), return_exceptions=True
        )
        await asyncio.gather(
            *(server.stop() for server in self.fork_servers()), return_exceptions=True
        )
        await self.cpu.close()
