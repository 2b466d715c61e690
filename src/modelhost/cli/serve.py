"""``modelhost serve``: the whole product on one machine (set up by :mod:`modelhost.server`)."""

from __future__ import annotations

import os
import sys

import click

from modelhost import __version__
from modelhost.settings import Settings, load_settings, settings_help, unknown_variables


def _print_settings_help(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(settings_help())
        ctx.exit()


def _warn_loudly(message: str) -> None:
    click.secho(f"WARNING: {message}", fg="red", bold=True, err=True)


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
@click.option(
    "--inherit",
    hidden=True,
    help="Set by the arbiter on the serving process it starts: the file descriptors it passes.",
)
def serve(
    host: str | None,
    port: int | None,
    home: str | None,
    log_level: str | None,
    inherit: str | None,
) -> None:
    """Run modelhost: API, gateway and instances, with SQLite and local disk by default.

    A small first process (the arbiter) holds the port and the data directory, and starts the
    serving process again at once if it dies."""
    settings = load_settings({"host": host, "port": port, "home": home, "log_level": log_level})
    if inherit is not None:
        _serving_process(settings, inherit)
        return
    from modelhost.arbiter import Arbiter

    for name in unknown_variables(os.environ):
        click.echo(
            f"Warning: {name} is not a modelhost setting and is ignored "
            "(modelhost serve --help-settings lists them).",
            err=True,
        )
    arbiter = Arbiter.open(settings)
    argv = [sys.executable, "-m", "modelhost", "serve"]
    for option, value in (("--host", host), ("--port", port), ("--home", home)):
        if value is not None:
            argv += [option, str(value)]
    if log_level is not None:
        argv += ["--log-level", log_level]
    sys.exit(arbiter.run(argv))


def _serving_process(settings: Settings, inherit: str) -> None:
    from modelhost.arbiter import Inherited
    from modelhost.server import Server  # the server's modules load only for this command

    server = Server.open(settings, Inherited.from_json(inherit), warn=_warn_loudly)
    click.echo(f"modelhost {__version__} serving at {settings.url}  (data: {settings.home})")
    if server.admin_key:
        click.echo(
            "Created the admin account. Its API key, shown only this once, is saved to "
            f"{server.credentials_path}:\n\n    {server.admin_key}\n"
        )
    sys.stdout.flush()
    server.run()
