"""The child side: a gateway process, ``python -m modelhost.gateway.process_child``, started by
the main server process when ``gateway_processes`` is above 1 (the parent side is
:mod:`modelhost.gateway.process_parent`).

It accepts connections on the server's listening socket, which it inherits, answers the calls it
holds instances for with the same :class:`Gateway` as the main process, and passes every other
request to the main process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import orjson

from modelhost import urls
from modelhost.backends.attached import AttachedInstance, spec_from_json
from modelhost.gateway import control
from modelhost.gateway.app import Gateway, Receive, Scope, Send
from modelhost.gateway.batching import batch_counts
from modelhost.gateway.board import LoadBoard
from modelhost.gateway.capture import CaptureOptions, CaptureQueue, CaptureWriter
from modelhost.gateway.counters import TokenCounters
from modelhost.gateway.hosts import HostGuard
from modelhost.gateway.limits import ConnectionLimits
from modelhost.gateway.metrics import CallMetrics
from modelhost.gateway.peers import Peers, socket_path
from modelhost.gateway.pool import VersionPool
from modelhost.gateway.proxy import Proxy
from modelhost.gateway.requestlog import RequestLog
from modelhost.gateway.steering import Steering, serve_steered
from modelhost.lifetime import die_with_parent

logger = logging.getLogger("modelhost.gateway.process_child")

_METRICS_INTERVAL_SECONDS = 1.0


class GatewayProcess:
    """The ASGI app of a gateway process, and its side of the talk with the main process."""

    def __init__(
        self,
        *,
        control_fd: int,
        handover_fd: int,
        proxy: Proxy,
        max_request_bytes: int,
        peers: Peers | None = None,
        request_log: bool = False,
        secret: bytes = b"",
        capture: CaptureOptions | None = None,
        counters: TokenCounters | None = None,
    ) -> None:
        self.gateway = Gateway(max_request_bytes=max_request_bytes)
        if counters is not None:  # the main process's, shared
            self.gateway.guard.counters = counters
        if request_log:
            self.gateway.request_log = RequestLog()
        options = capture or CaptureOptions()
        self.gateway.capture = CaptureQueue(options.max_records, options.max_record_bytes)
        #: writes this process's own part files (None: no capture directory was given)
        self.captures = (
            CaptureWriter(self.gateway.capture, Path(options.directory))
            if options.directory
            else None
        )
        self.gateway.forward = proxy
        self.gateway.peers = peers
        self.proxy = proxy
        self.peers = peers
        #: what the server's processes prove themselves with, passing a call on
        self.secret = secret
        self._control = socket.socket(fileno=control_fd)
        self._handover = socket.socket(fileno=handover_fd)
        self._writer: asyncio.StreamWriter | None = None
        self._instances: dict[str, AttachedInstance] = {}
        self._pools: dict[str, VersionPool] = {}
        self._routes: dict[str, Any] = {"models": []}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_gauges: list[list[Any]] = []
        self._last_batches: list[list[Any]] = []

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope.get("client") is None:  # another process passed it on its Unix socket
            control.keep_caller(scope, self.secret)
        if scope["type"] == "http" and urls.is_invocation(scope["path"]):
            return self.gateway(scope, receive, send)
        if scope["type"] == "http":
            return self.proxy(scope, receive, send)
        if scope["type"] == "lifespan":
            return self._lifespan(receive, send)
        return self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        reader, self._writer = await asyncio.open_unix_connection(sock=self._control)
        self._handover.setblocking(False)
        loop.add_reader(self._handover.fileno(), self._receive_instance)
        self._tasks = [
            loop.create_task(self._read(reader)),
            loop.create_task(self._send_metrics()),
        ]
        if self.captures is not None:
            self.captures.start()

    async def _stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self._handover.fileno())
        for task in self._tasks:
            task.cancel()
        await self._flush_metrics()
        if self.captures is not None:
            await asyncio.to_thread(self.captures.stop)
        await self.proxy.close()
        if self.peers is not None:
            await self.peers.close()

    # ------------------------------------------------------------------ from the main process

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                logger.error("the main server process went away; stopping")
                os._exit(0)  # its instances are gone with it: nothing left to serve
            message = control.decode(line)
            if message["type"] == "routes":
                self._routes = message["table"]
                self._apply()
                self._say({"type": "applied", "seq": message["seq"]})
            elif message["type"] == "release":
                asyncio.get_running_loop().create_task(
                    self._release(message["instance"], float(message["drain"]))
                )

    def _apply(self) -> None:
        peers = self.peers
        self.gateway.table = control.table_from(
            self._routes,
            self._pools,
            self._instances,
            peers.board if peers is not None else None,
            peers.process if peers is not None else 0,
        )

    def _receive_instance(self) -> None:
        try:
            data, fds, _flags, _address = socket.recv_fds(self._handover, control.HANDOVER_BYTES, 1)
        except BlockingIOError:
            return
        if not data:
            asyncio.get_running_loop().remove_reader(self._handover.fileno())
            return
        if not fds:
            logger.error("an instance was handed over without its connection")
            return
        spec = spec_from_json(orjson.loads(data))
        instance = AttachedInstance(spec, on_end=self._ended, on_gone=self._gone)
        self._instances[spec.instance_id] = instance
        asyncio.get_running_loop().create_task(self._attach(instance, fds[0]))

    async def _attach(self, instance: AttachedInstance, fd: int) -> None:
        await instance.attach(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd))
        self._apply()  # the routes may already name it

    async def _release(self, instance_id: str, drain: float) -> None:
        instance = self._instances.pop(instance_id, None)
        if instance is not None:
            self._take_out(instance)
            await instance.drained(drain)
            instance.detach()
        self._say({"type": "released", "instance": instance_id})

    # ------------------------------------------------------------------ instances

    def _ended(self, instance: AttachedInstance, reason: str, message: str) -> None:
        self._say(
            {
                "type": "ended",
                "instance": instance.spec.instance_id,
                "reason": reason,
                "message": message,
            }
        )

    def _gone(self, instance: AttachedInstance) -> None:
        self._instances.pop(instance.spec.instance_id, None)
        self._take_out(instance)

    def _take_out(self, instance: AttachedInstance) -> None:
        pool = self._pools.get(instance.spec.version_id)
        if pool is not None:
            pool.remove(instance)
            if not pool.ready_count:
                self._apply()

    # ------------------------------------------------------------------ to the main process

    def _say(self, message: dict[str, Any]) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(control.encode(message))

    async def _send_metrics(self) -> None:
        while True:
            await asyncio.sleep(_METRICS_INTERVAL_SECONDS)
            await self._flush_metrics()

    async def _flush_metrics(self) -> None:
        gateway = self.gateway
        rows = gateway.metrics.export()
        totals = gateway.metrics.export_totals()
        if rows or totals:
            gateway.metrics = CallMetrics()
        log = gateway.request_log
        requests = log.export() if log is not None else {}
        gauges = self._gauges()
        batches = self._batches()
        dropped = gateway.capture.take_dropped()
        if (
            rows
            or totals
            or requests
            or dropped
            or gauges != self._last_gauges
            or batches != self._last_batches
        ):
            self._last_gauges = gauges
            self._last_batches = batches
            self._say(
                {
                    "type": "metrics",
                    "rows": rows,
                    "totals": totals,
                    "requests": requests,
                    "gauges": gauges,
                    "batches": batches,
                    "capture_dropped": dropped,
                }
            )

    def _gauges(self) -> list[list[Any]]:
        """Calls in flight and queued on this process's instances, per version."""
        gauges: dict[tuple[str, int], list[int]] = {}
        seen: set[str] = set()
        for route in self.gateway.table.by_key.values():
            if route.model_id in seen:
                continue
            seen.add(route.model_id)
            for number, pool in route.pools.items():
                if pool.ready_count or pool.queued:
                    counts = gauges.setdefault((route.model_id, number), [0, 0])
                    counts[0] += pool.busy
                    counts[1] += pool.queued
        return [[model_id, number, *counts] for (model_id, number), counts in gauges.items()]

    def _batches(self) -> list[list[Any]]:
        """The batches this process's batching pools sent, per version."""
        found: list[list[Any]] = []
        seen: set[str] = set()
        for route in self.gateway.table.by_key.values():
            if route.model_id in seen:
                continue
            seen.add(route.model_id)
            for number, pool in route.pools.items():
                counts = batch_counts(pool)
                if counts is not None:
                    found.append([route.model_id, number, *counts])
        return found


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from modelhost.gateway.transport import protocol_with

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--handover-fd", type=int, required=True)
    parser.add_argument("--main-socket", required=True)
    parser.add_argument("--max-request-bytes", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--trusted-proxies", default="")
    parser.add_argument("--allowed-hosts", default="*")
    parser.add_argument("--limits", default="{}", help="ConnectionLimits as JSON")
    parser.add_argument("--parent", type=int, required=True, help="the main process's id")
    parser.add_argument("--board-fd", type=int, required=True, help="the idle board's memory")
    parser.add_argument("--processes", type=int, required=True, help="processes on the port")
    parser.add_argument("--request-log", action="store_true", help="a row per call to the main")
    parser.add_argument("--capture", default="{}", help="CaptureOptions as JSON")
    parser.add_argument("--counters-fd", type=int, required=True, help="token counters' memory")
    options = parser.parse_args(argv)
    # Killed with the main process: a call this process took then would find no instance and
    # nobody to pass it on to, where the listening socket keeps it until a new one is up.
    die_with_parent(options.parent)
    logging.basicConfig(
        level=options.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [gateway {options.index}] %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per passed-on request
    secret = os.environ.pop("MODELHOST_GATEWAY_SECRET", "")
    private = os.path.dirname(options.main_socket)
    peers = Peers(LoadBoard(options.processes, options.board_fd), options.index, private, secret)
    app = GatewayProcess(
        control_fd=options.control_fd,
        handover_fd=options.handover_fd,
        proxy=Proxy(options.main_socket, secret),
        max_request_bytes=options.max_request_bytes,
        peers=peers,
        request_log=options.request_log,
        secret=secret.encode(),
        capture=CaptureOptions(**orjson.loads(options.capture)),
        counters=TokenCounters(options.counters_fd),
    )
    listener = socket.socket(fileno=options.listen_fd)
    # Calls the other processes pass here, for an idle instance this process holds.
    from_peers = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):  # left by this process's predecessor
        os.unlink(socket_path(private, options.index))
    from_peers.bind(socket_path(private, options.index))
    from_peers.listen(2048)
    guard = HostGuard(app, options.allowed_hosts.split(","))
    # Behind trusted proxies uvicorn's middleware rewrites the scope before the app: calls
    # then always go through the app.
    direct = None if options.trusted_proxies else guard.direct(app.gateway.direct)
    config = uvicorn.Config(
        guard,
        loop="uvloop",
        http=protocol_with(ConnectionLimits(**orjson.loads(options.limits)), direct),
        interface="asgi3",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level=options.log_level,
        proxy_headers=bool(options.trusted_proxies),
        forwarded_allow_ips=options.trusted_proxies or None,
    )
    steering = Steering(peers.board, options.index, private, app.gateway.slot_for)
    app.gateway.steering = steering

    class _Serving(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                serve_steered(self, steering)

    with contextlib.suppress(KeyboardInterrupt):
        _Serving(config).run(sockets=[listener, from_peers])
    steering.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
