"""The ``modelhost`` command: thin parsing and printing over the client (or the app, for serve).

Error policy: a modelhost error prints one ``Error: ...`` line and exits 1; misuse exits 2 with
click's usage message; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

from typing import Any

import click

from modelhost import __version__
from modelhost.cli import access, backups, captures, envs, lifecycle, models, runs, serve
from modelhost.cli.connection import Connection
from modelhost.errors import BuildFailed, ModelhostError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BuildFailed as exc:
            if ctx.meta.get("modelhost.debug"):
                raise
            if exc.build_log:
                click.echo(exc.build_log.rstrip(), err=True)
            raise click.ClickException(exc.message) from None
        except ModelhostError as exc:
            if ctx.meta.get("modelhost.debug"):
                raise
            raise click.ClickException(exc.message) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="MODELHOST_URL", help="Server URL (default: from credentials).")
@click.option(
    "--api-key",
    envvar="MODELHOST_API_KEY",
    help="API key, mh_... (or set MODELHOST_API_KEY, which keeps it out of the command line).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="modelhost")
@click.pass_context
def cli(ctx: click.Context, url: str | None, api_key: str | None, debug: bool) -> None:
    """Publish Python and R functions as versioned, access-controlled REST endpoints."""
    ctx.meta["modelhost.debug"] = debug
    ctx.obj = Connection(url, api_key)
    ctx.call_on_close(ctx.obj.close)


cli.add_command(serve.serve)
for command in [
    *models.COMMANDS,
    *lifecycle.COMMANDS,
    *access.COMMANDS,
    *envs.COMMANDS,
    *runs.COMMANDS,
    *captures.COMMANDS,
    *backups.COMMANDS,
]:
    cli.add_command(command)


def main() -> None:
    cli(prog_name="modelhost")
