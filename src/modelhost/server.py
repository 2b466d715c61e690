"""The serving process of ``modelhost serve`` and what it sets up around the app: the gateway
processes, the sandbox and the first admin account. The arbiter (:mod:`modelhost.arbiter`)
starts it with the data directory's lock and the listening sockets, and starts it again if it
dies.

The CLI (:mod:`modelhost.cli.serve`) parses the options, calls :meth:`Server.open`, prints what
the user needs to know and calls :meth:`Server.run`; the process topology lives here.

>>> server = Server.open(settings, Inherited.from_json(text), warn=print)  # doctest: +SKIP
>>> server.run()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from modelhost import datadir
from modelhost.app import ModelhostApp, create_app
from modelhost.arbiter import READY, Inherited
from modelhost.db import coordination, leases
from modelhost.gateway import capture
from modelhost.gateway.board import LoadBoard
from modelhost.gateway.capture import CaptureOptions
from modelhost.gateway.limits import ConnectionLimits
from modelhost.gateway.process_parent import GatewayProcesses
from modelhost.lifetime import die_with_parent
from modelhost.operations.credentials import (
    CREDENTIALS_FILE,
    bootstrap_admin,
    refresh_credentials_url,
)
from modelhost.sandbox import open_sandbox
from modelhost.settings import Settings

logger = logging.getLogger("modelhost.serve")


@dataclass
class Server:
    """A server ready to run: its app wired, its sockets open, its data directory locked (by
    the arbiter, :mod:`modelhost.arbiter`, whose child this process is)."""

    settings: Settings
    app: ModelhostApp
    #: the first admin's API key when this start created the account, else None
    admin_key: str | None
    _sockets: list[socket.socket]
    _private: str | None  # the directory of the private Unix socket, removed at the end
    #: renews this server's lease on a SQLite database (one server per database); None on
    #: PostgreSQL, where servers share the database (:mod:`modelhost.db.coordination`)
    _heartbeat: leases.Heartbeat | None
    #: the pipe on which the arbiter hears that this process serves
    _ready: int

    @classmethod
    def open(
        cls, settings: Settings, inherited: Inherited, *, warn: Callable[[str], None]
    ) -> Server:
        """Open the sandbox (``warn`` hears that code is not isolated), start the gateway
        processes' sockets, wire the app and make the first admin account on first start.
        The data directory's lock and the listening sockets come from the arbiter."""
        die_with_parent(inherited.arbiter)
        # Ours alone: uvloop's subprocesses (instances, runs) would inherit them otherwise, and
        # a model could take connections off the port. Gateway processes get theirs passed.
        for fd in inherited.fds():
            os.set_inheritable(fd, False)
        os.umask(datadir.UMASK)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # httpx logs a line per request at INFO: one per call passed to a gateway process
        logging.getLogger("httpx").setLevel(logging.WARNING)
        # Alembic logs each migration it applies at INFO, docstrings and all: the database
        # module says in one line what it did instead
        logging.getLogger("alembic").setLevel(logging.WARNING)
        tightened = datadir.make_private(settings.home_path)
        if tightened:
            logger.warning(
                "Made the data directory %s private (other users could read it): took group "
                "and other permissions off %s",
                settings.home,
                ", ".join(tightened),
            )
        sandbox = open_sandbox(settings)  # isolation = sandbox refuses to start without one
        if sandbox.status.isolated:
            logger.info("Code runs sandboxed (bubblewrap) as %s.", sandbox.status.user)
        else:
            logger.warning("%s", sandbox.status.reason)
            warn(sandbox.status.reason)
        listeners = [socket.socket(fileno=fd) for fd in inherited.listeners]
        sockets, gateways, private = _gateway_processes(settings, listeners)
        app = create_app(settings, gateways=gateways, sandbox=sandbox)
        # One server per SQLite database: a second one refuses here, before it touches runs or
        # instances. Servers on PostgreSQL share theirs and elect a leader.
        engine = app.services.repo.engine
        heartbeat = None
        if engine.dialect.name != "postgresql":
            holder = leases.Holder.this_process(settings.home_path, settings.url, inherited.arbiter)
            leases.claim(engine, holder)
            heartbeat = leases.Heartbeat(engine, holder).start()
        with coordination.first_start(engine):
            key = bootstrap_admin(app.services.repo, settings.home_path, settings.url)
        refresh_credentials_url(settings.home_path, settings.url)
        return cls(settings, app, key, sockets, private, heartbeat, inherited.ready)

    @property
    def credentials_path(self) -> Path:
        """Where the first admin's API key is saved."""
        return self.settings.home_path / CREDENTIALS_FILE

    def run(self) -> None:
        """Serve until stopped (SIGINT or SIGTERM), then drain and clean up."""
        import uvicorn

        from modelhost.gateway.hosts import HostGuard
        from modelhost.gateway.steering import serve_steered
        from modelhost.gateway.transport import protocol_with

        settings = self.settings
        guard = HostGuard(self.app, settings.allowed_host_names)
        # Behind trusted proxies uvicorn's middleware rewrites the scope before the app: calls
        # then always go through the app.
        direct = None if settings.trusted_proxies else guard.direct(self.app.gateway.direct)
        config = uvicorn.Config(
            guard,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            # Not uvicorn's limit_concurrency: protocol_with counts connections itself, so that
            # the 503 comes in the error envelope and max_connections means connections served.
            http=protocol_with(ConnectionLimits.from_settings(settings), direct),
            interface="asgi3",
            server_header=False,
            lifespan="on",
            access_log=False,
            log_level=settings.log_level,
            timeout_graceful_shutdown=int(settings.drain_timeout_seconds),
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies or None,
        )
        ready = self._ready
        services = self.app.services
        gateway = self.app.gateway
        delay = settings.shutdown_delay_seconds

        class _Serving(uvicorn.Server):
            stop_at: float | None = None

            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                if self.started and gateway.steering is not None:
                    serve_steered(self, gateway.steering)
                if self.started:  # accepting connections: the arbiter may count it up
                    with contextlib.suppress(OSError):
                        os.write(ready, READY)
                        os.close(ready)

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if delay > 0 and self.stop_at is None and not self.should_exit:
                    # First stop: say "not ready" on /health while still answering, so load
                    # balancers take this server out before it stops taking connections.
                    services.state.draining = True
                    self.stop_at = time.monotonic() + delay
                    logger.info(
                        "stopping: /health answers 503 for %g s (setting "
                        "shutdown_delay_seconds), then in-flight calls finish",
                        delay,
                    )
                    return
                services.state.draining = True
                super().handle_exit(sig, frame)

            async def on_tick(self, counter: int) -> bool:
                if self.stop_at is not None and time.monotonic() >= self.stop_at:
                    self.should_exit = True
                return await super().on_tick(counter)

        # uvicorn shuts down gracefully on SIGTERM and then raises it again: this handler turns
        # that into a clean exit, so what follows runs (the lease is released, files removed).
        signal.signal(signal.SIGTERM, _exit_cleanly)
        try:
            _Serving(config).run(sockets=self._sockets)
        finally:
            if self._heartbeat is not None:
                self._heartbeat.stop()
            if self._private is not None:
                shutil.rmtree(self._private, ignore_errors=True)


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _gateway_processes(
    settings: Settings, listeners: list[socket.socket]
) -> tuple[list[socket.socket], GatewayProcesses | None, str | None]:
    """With ``gateway_processes`` above 1: the listening sockets past the first go to the
    gateway processes, and this process also takes what they pass on, on a private Unix
    socket."""
    if settings.gateway_processes == 1:
        return listeners, None, None
    private = tempfile.mkdtemp(prefix="modelhost-")  # mode 0700: this user only
    main_socket = os.path.join(private, "main.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(main_socket)
    unix.listen(2048)
    gateways = GatewayProcesses(
        listeners=listeners[1:],
        main_socket=main_socket,
        board=LoadBoard(settings.gateway_processes),
        secret=secrets.token_urlsafe(32),
        max_request_bytes=settings.max_request_bytes,
        log_level=settings.log_level,
        trusted_proxies=settings.trusted_proxies,
        allowed_hosts=settings.allowed_host_names,
        limits=ConnectionLimits.from_settings(settings),
        request_log=settings.request_log,
        capture=CaptureOptions(
            str(settings.home_path / capture.DIRECTORY),
            settings.capture_queue_records,
            settings.capture_max_record_bytes,
        ),
    )
    return [listeners[0], unix], gateways, private
