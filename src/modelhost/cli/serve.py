"""``modelhost serve``: the whole product on one machine."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import click

from modelhost import __version__, errors
from modelhost.gateway.processes import GatewayProcesses
from modelhost.settings import Settings, load_settings, settings_help, unknown_variables


def _lock_home(home: Path) -> TextIO:
    """One server per data directory: a second one would run every instance twice."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        handle = (home / "server.lock").open("a+")
    except OSError as exc:
        raise errors.BadRequest(
            f"Cannot use {home} as the data directory ({exc.strerror}); give a directory this "
            "user can write to with --home or MODELHOST_HOME."
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        raise errors.Conflict(
            f"Another modelhost server ({owner}) is using the data directory {home}; stop it, "
            "or give this one another --home."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def _check_port(host: str, port: int) -> None:
    """Fail before any instance starts, with a message, if the address is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            raise errors.BadRequest(
                f"Cannot find the address of {host} ({exc.strerror}); pass --host (or set "
                "MODELHOST_HOST) to 127.0.0.1, 0.0.0.0 (every address) or one of this "
                "machine's addresses."
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise errors.BadRequest(
                    f"This machine has no address {host}; pass --host (or set MODELHOST_HOST) "
                    "to 127.0.0.1, 0.0.0.0 (every address) or one of its own addresses."
                ) from None
            if exc.errno == errno.EACCES:
                raise errors.BadRequest(
                    f"Cannot listen on {host}:{port} ({exc.strerror}): ports below 1024 need "
                    "privileges. Pass --port (or set MODELHOST_PORT) to 1024 or above."
                ) from None
            raise errors.Conflict(
                f"Cannot listen on {host}:{port} ({exc.strerror}); another program uses it. "
                "Stop it or pass --port (or set MODELHOST_PORT)."
            ) from None


def _print_settings_help(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(settings_help())
        ctx.exit()


@click.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000).")
@click.option("--home", help="Data directory (default $MODELHOST_HOME or ~/.modelhost).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--help-settings",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_settings_help,
    help="List every setting and exit.",
)
def serve(host: str | None, port: int | None, home: str | None, log_level: str | None) -> None:
    """Run modelhost: API, gateway and instances, with SQLite and local disk by default."""
    import uvicorn

    from modelhost.app import create_app
    from modelhost.gateway.transport import GatheringHttpToolsProtocol
    from modelhost.operations.accounts import (
        CREDENTIALS_FILE,
        bootstrap_admin,
        refresh_credentials_url,
    )

    settings = load_settings({"host": host, "port": port, "home": home, "log_level": log_level})
    for name in unknown_variables(os.environ):
        click.echo(
            f"Warning: {name} is not a modelhost setting and is ignored "
            "(modelhost serve --help-settings lists them).",
            err=True,
        )
    _lock = _lock_home(settings.home_path)  # held as long as this process runs
    try:
        _check_port(settings.host, settings.port)
    except errors.ModelhostError:
        _lock.close()
        raise
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sockets, gateways, private = _gateway_processes(settings)
    app = create_app(settings, gateways=gateways)
    key = bootstrap_admin(app.services.repo, settings.home_path, settings.url)
    refresh_credentials_url(settings.home_path, settings.url)
    click.echo(f"modelhost {__version__} serving at {settings.url}  (data: {settings.home})")
    if key:
        click.echo(
            "Created the admin account. Its API key, shown only this once, is saved to "
            f"{settings.home_path / CREDENTIALS_FILE}:\n\n    {key}\n"
        )
    sys.stdout.flush()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=GatheringHttpToolsProtocol,
        interface="asgi3",
        server_header=False,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.drain_timeout_seconds),
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
    )
    try:
        uvicorn.Server(config).run(sockets=sockets)
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def _gateway_processes(
    settings: Settings,
) -> tuple[list[socket.socket] | None, GatewayProcesses | None, str | None]:
    """With ``gateway_processes`` above 1: a listening socket on the port for each process,
    and a private Unix socket on which this process takes what the others pass on."""
    if settings.gateway_processes == 1:
        return None, None, None
    # One listening socket per process on the same port (SO_REUSEPORT): the kernel spreads
    # new connections evenly over them, where one shared socket lets whichever process wakes
    # first take most of them.
    listeners = [
        _listening(settings.host, settings.port) for _ in range(settings.gateway_processes)
    ]
    private = tempfile.mkdtemp(prefix="modelhost-")  # mode 0700: this user only
    main_socket = os.path.join(private, "main.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(main_socket)
    unix.listen(2048)
    gateways = GatewayProcesses(
        listeners=listeners[1:],
        main_socket=main_socket,
        secret=secrets.token_urlsafe(32),
        max_request_bytes=settings.max_request_bytes,
        log_level=settings.log_level,
        trusted_proxies=settings.trusted_proxies,
    )
    return [listeners[0], unix], gateways, private


def _listening(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    return listener
