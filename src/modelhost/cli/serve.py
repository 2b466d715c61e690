"""``modelhost serve``: the whole product on one machine."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TextIO

import click

from modelhost import __version__, errors
from modelhost.settings import load_settings, settings_help, unknown_variables


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
    app = create_app(settings)
    key = bootstrap_admin(app.services.repo, settings.home_path, settings.url)
    refresh_credentials_url(settings.home_path, settings.url)
    click.echo(f"modelhost {__version__} serving at {settings.url}  (data: {settings.home})")
    if key:
        click.echo(
            "Created the admin account. Its API key, shown only this once, is saved to "
            f"{settings.home_path / CREDENTIALS_FILE}:\n\n    {key}\n"
        )
    sys.stdout.flush()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.drain_timeout_seconds),
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
    )
