"""The parent side of gateway processes (setting ``gateway_processes`` above 1): the main
server process starts, feeds and restarts them (the child side is
:mod:`modelhost.gateway.process_child`).

One Python process can parse HTTP and relay calls for only so many requests a second; on a
machine with more cores, more processes accept connections on the same listening socket. The
main process still runs everything else (API, UI, reconciler, instances) and hands each ready
Python instance to exactly one process, which is then the only one that sends it calls: an
instance never has two callers, so admission, sending ahead and call timeouts work as in one
process. A version gets its instances spread over the processes, the main one first.

A gateway process answers the calls it holds an instance for and passes everything else to the
main process (:mod:`modelhost.gateway.proxy`). The main process sends it the route table after
each reconcile tick and waits (briefly) until it is applied, so that a change an API call made
is in every process's table when the call returns; it asks for an instance back before stopping
it, and merges the call metrics the process sends each second. If a gateway process dies, the
instances it held are ended (the reconciler replaces them) and it is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import orjson

from modelhost.backends.attached import spec_to_json
from modelhost.backends.base import Instance
from modelhost.gateway import control
from modelhost.gateway.app import Gateway
from modelhost.gateway.board import LoadBoard
from modelhost.gateway.capture import CaptureOptions
from modelhost.gateway.limits import ConnectionLimits
from modelhost.gateway.peers import Peers
from modelhost.gateway.routes import RouteTable
from modelhost.gateway.steering import Steering

logger = logging.getLogger(__name__)

_APPLY_TIMEOUT_SECONDS = 2.0
_RESTART_DELAY_SECONDS = 1.0
_STOP_GRACE_SECONDS = 5.0


@dataclass
class _Peer:
    index: int
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    handover: socket.socket
    last_routes: bytes = b""
    waiting: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    alive: bool = True


class GatewayProcesses:
    def __init__(
        self,
        *,
        listeners: list[socket.socket],
        main_socket: str,
        board: LoadBoard,
        secret: str,
        max_request_bytes: int,
        log_level: str,
        trusted_proxies: str,
        allowed_hosts: tuple[str, ...],
        limits: ConnectionLimits | None = None,
        request_log: bool = True,
        capture: CaptureOptions | None = None,
    ) -> None:
        #: a listening socket on the server's port for each extra process
        self.listeners = listeners
        self.main_socket = main_socket
        #: every process's idle instances of each version, in memory they all share
        self.board = board
        self.secret = secret
        self.max_request_bytes = max_request_bytes
        self.log_level = log_level
        self.trusted_proxies = trusted_proxies
        self.allowed_hosts = allowed_hosts
        #: every process takes connections on the port, so each one applies the same limits
        self.limits = limits or ConnectionLimits()
        #: whether the processes send a row per call for the request log
        self.request_log = request_log
        #: where the processes write the calls they capture (none: they capture nothing)
        self.capture = capture or CaptureOptions()
        self._peers: dict[int, _Peer] = {}
        #: instance id -> (the process that sends it calls: 0 this one, else a peer's index;
        #: the instance)
        self._holders: dict[str, tuple[int, Instance]] = {}
        #: instances being stopped: they no longer count when instances are shared out
        self._leaving: set[str] = set()
        self._seq = itertools.count(1)
        self._closing = False
        self._gateway: Gateway | None = None
        self._end: Callable[[str, str, str], None] = lambda *_: None

    async def start(self, gateway: Gateway, end: Callable[[str, str, str], None]) -> None:
        """Spawn the processes. Their metrics and request log rows go to the main process's
        ``gateway``; ``end(instance id, reason, message)`` ends an instance."""
        self._gateway = gateway
        self._end = end
        gateway.guard.counters.share()  # every process changes the token counters from now on
        for index in range(1, len(self.listeners) + 1):
            await self._spawn(index)

    def _counters_fd(self) -> int:
        """The token counters' shared memory: the main process's gateway made it."""
        assert self._gateway is not None, "start() gives the gateway first"
        return self._gateway.guard.counters.fd

    async def _spawn(self, index: int) -> None:
        control_main, control_child = socket.socketpair()
        handover_main, handover_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener = self.listeners[index - 1]
        keep = (
            listener.fileno(),
            control_child.fileno(),
            handover_child.fileno(),
            self.board.fd,
            self._counters_fd(),
        )
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "modelhost.gateway.process_child",
                "--index",
                str(index),
                "--listen-fd",
                str(listener.fileno()),
                "--control-fd",
                str(control_child.fileno()),
                "--handover-fd",
                str(handover_child.fileno()),
                "--main-socket",
                self.main_socket,
                "--max-request-bytes",
                str(self.max_request_bytes),
                "--log-level",
                self.log_level,
                "--trusted-proxies",
                self.trusted_proxies,
                "--allowed-hosts",
                ",".join(self.allowed_hosts),
                "--limits",
                orjson.dumps(asdict(self.limits)).decode(),
                "--parent",
                str(os.getpid()),
                "--board-fd",
                str(self.board.fd),
                "--processes",
                str(self.board.processes),
                "--counters-fd",
                str(self._counters_fd()),
                *(["--request-log"] if self.request_log else []),
                "--capture",
                orjson.dumps(asdict(self.capture)).decode(),
                pass_fds=keep,
                env={**os.environ, "MODELHOST_GATEWAY_SECRET": self.secret},
            )
        finally:
            control_child.close()
            handover_child.close()
        reader, writer = await asyncio.open_unix_connection(sock=control_main)
        handover_main.settimeout(_APPLY_TIMEOUT_SECONDS)
        peer = _Peer(index, process, writer, handover_main)
        self._peers[index] = peer
        loop = asyncio.get_running_loop()
        peer.tasks = [
            loop.create_task(self._read(peer, reader)),
            loop.create_task(self._watch(peer)),
        ]
        logger.info("gateway process %d started (pid %d)", index, process.pid)

    def peers(self) -> Peers:
        """The gateway processes as the main process passes calls to them."""
        return Peers(self.board, 0, os.path.dirname(self.main_socket), self.secret)

    def steering(self, slot_for: Callable[[str], int | None]) -> Steering:
        """The main process's side of steering connections (:mod:`..steering`)."""
        return Steering(self.board, 0, os.path.dirname(self.main_socket), slot_for)

    # ------------------------------------------------------------------ instances

    def keeps(self, instance: Instance) -> bool:
        """Whether this process sends ``instance`` its calls; if not, it was handed to a
        gateway process (on first sight: a version's instances are spread evenly)."""
        instance_id = instance.spec.instance_id
        version_id = instance.spec.version_id
        holder = self._holders.get(instance_id)
        if instance.spec.batch and (holder is None or holder[0] == 0):
            # All of a batching version's instances stay here, so that its calls wait in one
            # queue and leave in the largest batches; its connections are steered here
            # (:mod:`modelhost.gateway.steering`).
            return True
        counts = self._counts(version_id)
        if holder is None:
            index = min(counts, key=lambda i: (counts[i], i))
        elif holder[0] != 0:
            return False
        else:
            # Held here while a gateway process holds two fewer of its version (it was
            # restarted, or had died when the instance became ready): hand one over, between
            # calls, since this process stops reading the connection.
            index = min(counts, key=lambda i: (counts[i], i != 0))
            if counts[0] - counts[index] < 2 or instance.inflight:
                return True
        if index != 0 and not self._hand_over(self._peers[index], instance):
            index = 0
        self._holders[instance_id] = (index, instance)
        return index == 0

    def _counts(self, version_id: str) -> dict[int, int]:
        """Instances of the version each live process holds (0: this one)."""
        counts = {0: 0} | {index: 0 for index, peer in self._peers.items() if peer.alive}
        for instance_id, (held_by, held) in self._holders.items():
            if (
                held.spec.version_id == version_id
                and held_by in counts
                and instance_id not in self._leaving
            ):
                counts[held_by] += 1
        return counts

    def leaving(self, instance: Instance) -> None:
        """``instance`` is about to stop: the next one of its version is shared out without
        it, so that this process is not left without an instance of a version (a restart
        replaces each instance with a new one while the old still runs)."""
        self._leaving.add(instance.spec.instance_id)

    def holder(self, instance_id: str) -> int:
        """The process that sends the instance calls: 0 for this one, else a gateway process."""
        holder = self._holders.get(instance_id)
        return holder[0] if holder is not None else 0

    def _hand_over(self, peer: _Peer, instance: Instance) -> bool:
        hand_over = getattr(instance, "hand_over", None)
        connection = hand_over() if hand_over is not None else None
        if connection is None:
            return False
        try:
            with connection:
                spec = orjson.dumps(spec_to_json(instance.spec))
                socket.send_fds(peer.handover, [spec], [connection.fileno()])
        except OSError as exc:
            logger.error("could not hand an instance to gateway process %d: %s", peer.index, exc)
            instance.take_back()  # type: ignore[attr-defined]
            return False
        return True

    async def release(self, instance: Instance, drain_timeout: float) -> None:
        """Before ``instance`` stops: its gateway process lets its calls finish and lets go."""
        self._leaving.discard(instance.spec.instance_id)
        holder = self._holders.pop(instance.spec.instance_id, None)
        if holder is None or holder[0] == 0:
            return
        peer = self._peers.get(holder[0])
        if peer is None or not peer.alive:
            return
        key = f"release:{instance.spec.instance_id}"
        await self._ask(
            peer,
            key,
            {"type": "release", "instance": instance.spec.instance_id, "drain": drain_timeout},
            drain_timeout + _APPLY_TIMEOUT_SECONDS,
        )

    def forget(self, instance: Instance) -> None:
        """``instance`` is gone (it exited): nothing to release."""
        self._leaving.discard(instance.spec.instance_id)
        self._holders.pop(instance.spec.instance_id, None)

    # ------------------------------------------------------------------ routes

    async def publish(self, table: RouteTable) -> None:
        """Send each gateway process the table as it serves it, and wait until it applied it."""
        asks = []
        for peer in self._peers.values():
            if not peer.alive:
                continue
            held = {
                i: inst.spec.version_id
                for i, (by, inst) in self._holders.items()
                if by == peer.index
            }
            routes = orjson.dumps(control.routes_for(table, held))
            if routes == peer.last_routes:
                continue
            peer.last_routes = routes
            seq = next(self._seq)
            message = {"type": "routes", "seq": seq, "table": orjson.Fragment(routes)}
            asks.append(self._ask(peer, f"routes:{seq}", message, _APPLY_TIMEOUT_SECONDS))
        if asks:
            await asyncio.gather(*asks)

    async def _ask(self, peer: _Peer, key: str, message: dict[str, object], timeout: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        peer.waiting[key] = future
        try:
            peer.writer.write(control.encode(message))
            await asyncio.wait_for(future, timeout)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            logger.warning("gateway process %d did not answer %s: %r", peer.index, key, exc)
        finally:
            peer.waiting.pop(key, None)

    # ------------------------------------------------------------------ from the processes

    async def _read(self, peer: _Peer, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                message = control.decode(line)
                kind = message["type"]
                if kind == "applied":
                    self._answered(peer, f"routes:{message['seq']}")
                elif kind == "released":
                    self._answered(peer, f"release:{message['instance']}")
                elif kind == "metrics" and self._gateway is not None:
                    gateway = self._gateway
                    gateway.metrics.merge(message["rows"])
                    gateway.metrics.merge_totals(message.get("totals", ()))
                    if "gauges" in message:
                        gateway.metrics.set_gauges(peer.index, message["gauges"])
                    if "batches" in message:
                        gateway.metrics.set_batches(peer.index, message["batches"])
                    if gateway.request_log is not None and message.get("requests"):
                        gateway.request_log.add_lines(message["requests"])
                    if message.get("capture_dropped"):
                        gateway.capture.merge_dropped(message["capture_dropped"])
                elif kind == "ended":
                    self._end(message["instance"], message["reason"], message["message"])
            except Exception:
                logger.exception("bad message from gateway process %d", peer.index)

    def _answered(self, peer: _Peer, key: str) -> None:
        future = peer.waiting.get(key)
        if future is not None and not future.done():
            future.set_result(None)

    async def _watch(self, peer: _Peer) -> None:
        code = await peer.process.wait()
        peer.alive = False
        self.board.forget(peer.index)  # no call is passed to it until its successor says so
        if self._gateway is not None:
            self._gateway.metrics.set_gauges(peer.index, ())
            self._gateway.metrics.set_batches(peer.index, ())
        for future in peer.waiting.values():
            if not future.done():
                future.set_result(None)
        held = [(i, inst) for i, (by, inst) in self._holders.items() if by == peer.index]
        for instance_id, instance in held:
            del self._holders[instance_id]
            if not self._closing:
                instance.end("gateway", "the gateway process that held it exited; replacing it")
        peer.writer.close()
        peer.handover.close()
        if self._closing:
            return
        logger.error("gateway process %d exited with code %s; starting it again", peer.index, code)
        await asyncio.sleep(_RESTART_DELAY_SECONDS)
        if not self._closing:
            await self._spawn(peer.index)

    async def close(self) -> None:
        """Stop the gateway processes (before the instances stop)."""
        self._closing = True
        peers = list(self._peers.values())
        for peer in peers:
            if peer.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    peer.process.terminate()
        for peer in peers:
            try:
                await asyncio.wait_for(peer.process.wait(), _STOP_GRACE_SECONDS)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    peer.process.kill()
                await peer.process.wait()
            for task in peer.tasks:
                task.cancel()
