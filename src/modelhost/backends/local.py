"""The local backend: each instance is a worker process on this machine, talked to over a
socketpair with the framed protocol. No ports are opened for instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from modelhost import errors
from modelhost.backends.base import CallResult, Instance, InstanceSpec, InstanceState
from modelhost.runtime import protocol

logger = logging.getLogger(__name__)

WORKER = Path(__file__).resolve().parent.parent / "runtime" / "worker.py"
WORKER_R = WORKER.with_name("worker.R")
_EXIT_GRACE_SECONDS = 5.0
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


class _Call:
    """A call sent to the instance. Its clock starts when the instance can run it (when fewer
    calls than the version's concurrency are ahead of it), not when it was sent ahead."""

    __slots__ = ("future", "started", "timeout")

    def __init__(self, future: asyncio.Future[tuple[int, bytes]], timeout: float) -> None:
        self.future = future
        self.timeout = timeout
        self.started: float | None = None


class _Connection(asyncio.Protocol):
    def __init__(self, instance: LocalInstance) -> None:
        self.instance = instance
        self.decoder = protocol.FrameDecoder()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except protocol.ProtocolError as exc:
            logger.error("instance %s sent garbage: %s", self.instance.spec.instance_id, exc)
            self.instance.kill()
            return
        for kind, payload in frames:
            self.instance._on_frame(kind, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.instance._on_connection_lost()


class LocalInstance:
    """A worker process and the connection to it; calls are matched to answers by id."""

    def __init__(self, spec: InstanceSpec, on_change: Callable[[], None]) -> None:
        self.spec = spec
        self.state = InstanceState.STARTING
        self.failure: str | None = None
        self.signature: str | None = None
        self.inflight = 0
        self.exit_code: int | None = None
        self.ended_by: str | None = None
        self._stop_requested = False
        self._announced = False
        self._nonce = secrets.token_hex(8)
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        #: calls sent and not yet answered, in the order they were sent
        self._pending: dict[str, _Call] = {}
        #: one timer for the earliest deadline of the calls running, re-armed lazily
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._load_timer: asyncio.TimerHandle | None = None
        self._exited = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def launch(self, load_timeout: float) -> None:
        """Spawn the worker and connect to it: a socketpair for Python, loopback TCP for R
        (R cannot use an inherited socket), where the worker proves itself with a nonce."""
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        worker_spec = {
            "workdir": str(spec.workdir),
            "file": spec.file,
            "function": spec.function,
            "instance": spec.instance_id,
            "concurrency": spec.concurrency,
            "log_requests": spec.log_requests,
        }
        if spec.runtime == "r":
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            listener.setblocking(False)
            port = listener.getsockname()[1]
            argv = [spec.interpreter, "--vanilla", str(WORKER_R), "--port", str(port)]
            keep: tuple[int, ...] = ()
        else:
            parent, child = socket.socketpair()
            argv = [spec.interpreter, "-u", str(WORKER), "--fd", str(child.fileno())]
            keep = (child.fileno(),)
        self.log(f"starting instance {spec.instance_id} of version {spec.version_number}")
        try:
            with spec.log_path.open("ab") as log:
                self._process = await asyncio.create_subprocess_exec(
                    *argv,
                    "--spec",
                    json.dumps(worker_spec),
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
                sock.close()
            self._fail(f"Could not start the instance with {spec.interpreter}: {exc}.")
            self._exited.set()
            return
        self._load_timer = self._loop.call_later(load_timeout, self._load_timed_out, load_timeout)
        self._loop.create_task(self._watch_exit())
        if spec.runtime == "r":
            self._loop.create_task(self._accept(listener))
        else:
            child.close()
            self._transport, _ = await self._loop.create_unix_connection(
                lambda: _Connection(self), sock=parent
            )

    async def _accept(self, listener: socket.socket) -> None:
        accept = asyncio.ensure_future(self._loop.sock_accept(listener))
        exited = asyncio.ensure_future(self._exited.wait())
        try:
            await asyncio.wait({accept, exited}, return_when=asyncio.FIRST_COMPLETED)
            if accept.done() and not accept.cancelled() and accept.exception() is None:
                connection, _ = accept.result()
                self._transport, _ = await self._loop.create_connection(
                    lambda: _Connection(self), sock=connection
                )
        finally:
            accept.cancel()
            exited.cancel()
            listener.close()

    async def _watch_exit(self) -> None:
        assert self._process is not None
        self.exit_code = await self._process.wait()
        self._on_gone()
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
                self.log(f"instance {self.spec.instance_id} {how}; it will be replaced")
            self.state = InstanceState.EXITED
            self._on_change()
        self._fail_pending()

    def _fail_pending(self) -> None:
        """No answer will come. A call that never started (it waited behind others, and the
        worker runs one at a time) is safe to send elsewhere; the ones that ran are not."""
        pending, self._pending = self._pending, {}
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        resend = self.spec.concurrency == 1
        for call in pending.values():
            if call.future.done():
                continue
            if resend and call.started is None:
                call.future.set_exception(
                    errors.CallNotStarted(
                        f"The instance running version {self.spec.version_number} went away "
                        "before this call started; it was not run."
                    )
                )
            else:
                call.future.set_exception(
                    errors.InstanceCrashed(
                        f"The instance running version {self.spec.version_number} died during "
                        "the call; it is being replaced. The instance log may say why."
                    )
                )

    def _on_connection_lost(self) -> None:
        if self.state is InstanceState.STARTING:
            return  # the exit watcher reports it, with the exit code and the whole log
        # The process is gone or closed its end; either way no answer will come.
        if self.state is InstanceState.READY:
            self.kill()
        self._on_gone()

    def _on_frame(self, kind: int, payload: bytes) -> None:
        if kind in (protocol.RESULT, protocol.ERROR):
            request_id = payload[: protocol.REQUEST_ID_LENGTH].decode("ascii")
            call = self._pending.pop(request_id, None)
            if call is None:
                return
            if not call.future.done():
                call.future.set_result((kind, payload))
            if self._pending:
                self._start_clocks(self._loop.time())
        elif kind == protocol.READY:
            if self._load_timer:
                self._load_timer.cancel()
            info = json.loads(payload)
            if self.spec.runtime == "r" and info.get("nonce") != self._nonce:
                self._fail("A process that is not this instance connected to its port.")
                self.kill()
                return
            self.signature = info.get("signature")
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
            self._fail(info["message"] + ("\n" + detail if detail else ""))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log(self, message: str) -> None:
        """A line from the server about this instance, in the instance's own log."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        line = f"{now.replace('+00:00', 'Z')} server [modelhost] {message}\n"
        with self.spec.log_path.open("ab") as log:
            log.write(line.encode())

    def memory_mb(self) -> float | None:
        if self._process is None or self._process.returncode is not None:
            return None
        try:
            fields = Path(f"/proc/{self._process.pid}/statm").read_text().split()
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

    def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)

    async def stop(self, drain_timeout: float) -> None:
        """Let in-flight calls finish (up to ``drain_timeout``), then end the process."""
        if self.state in (InstanceState.READY, InstanceState.STARTING):
            self._stop_requested = True  # a stop on purpose, not a death to report
        if self.state in (InstanceState.READY, InstanceState.STARTING):
            self.state = InstanceState.STOPPING
        deadline = self._loop.time() + drain_timeout
        while self.inflight and self._loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(protocol.encode(protocol.SHUTDOWN))
        try:
            await asyncio.wait_for(self._exited.wait(), _EXIT_GRACE_SECONDS)
        except asyncio.TimeoutError:
            self.kill()
            await self._exited.wait()
        if self._transport is not None:
            self._transport.close()

    # ------------------------------------------------------------------ calls

    async def call(self, request_id: str, body: bytes, timeout: float) -> CallResult:
        if self.state is not InstanceState.READY or self._transport is None:
            raise errors.NoReadyInstance(
                "The instance is not ready; retry shortly.", headers={"Retry-After": "1"}
            )
        call = _Call(self._loop.create_future(), timeout)
        self._pending[request_id] = call
        if len(self._pending) <= self.spec.concurrency:
            call.started = self._loop.time()
            self._arm(call.started + timeout)
        self.inflight += 1
        try:
            self._transport.write(protocol.encode_call(request_id, body))
            kind, payload = await call.future
        finally:
            self.inflight -= 1
        if kind == protocol.RESULT:
            return CallResult(*protocol.decode_result_body(payload))
        error = json.loads(protocol.decode_error(payload)[1])
        cls = errors.ERRORS_BY_CODE.get(error.get("code"), errors.ModelError)
        raise cls(error.get("message", "The call failed."))

    def _arm(self, deadline: float) -> None:
        watchdog = self._watchdog
        if watchdog is None or watchdog.when() > deadline:
            if watchdog is not None:
                watchdog.cancel()
            self._watchdog = self._loop.call_at(deadline, self._check_clocks)

    def _start_clocks(self, now: float) -> None:
        """An answer came: the calls now among the first ``concurrency`` have begun."""
        for index, call in enumerate(self._pending.values()):
            if index >= self.spec.concurrency:
                break
            if call.started is None:
                call.started = now
                self._arm(now + call.timeout)

    def _check_clocks(self) -> None:
        """Fail the first running call past its timeout, else wait for the next deadline.
        Answers do not touch the timer: it is re-armed here, once per deadline at most."""
        self._watchdog = None
        now = self._loop.time()
        earliest: float | None = None
        for index, (request_id, call) in enumerate(self._pending.items()):
            if index >= self.spec.concurrency:
                break
            if call.started is None:
                continue
            deadline = call.started + call.timeout
            if deadline <= now:
                self._call_timed_out(request_id, call)
                return
            earliest = deadline if earliest is None else min(earliest, deadline)
        if earliest is not None:
            self._watchdog = self._loop.call_at(earliest, self._check_clocks)

    def _call_timed_out(self, request_id: str, call: _Call) -> None:
        del self._pending[request_id]
        call.future.set_exception(
            errors.ModelTimeout(
                f"The call did not finish within {call.timeout:g} s; the instance is being "
                "replaced. Make the function faster or raise the model's timeout."
            )
        )
        self.end(
            "timeout", f"a call passed the timeout of {call.timeout:g} s; replacing the instance"
        )
        # The calls waiting behind it never started: they go to another instance now rather
        # than when this process is gone.
        self._fail_pending()


class LocalBackend:
    """Supervises worker processes on this machine."""

    def __init__(self) -> None:
        self._instances: dict[str, LocalInstance] = {}
        self._listener: Callable[[], None] = lambda: None

    def set_listener(self, listener: Callable[[], None]) -> None:
        self._listener = listener

    def _changed(self) -> None:
        self._listener()

    async def start(self, spec: InstanceSpec, load_timeout: float) -> LocalInstance:
        if not spec.workdir.is_dir():
            raise errors.InternalError(f"working copy {spec.workdir} is missing")
        instance = LocalInstance(spec, self._changed)
        self._instances[spec.instance_id] = instance
        await instance.launch(load_timeout)
        return instance

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
