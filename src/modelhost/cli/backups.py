"""``modelhost backup`` and ``modelhost restore``: run on a server's machine, with its
settings (they read the data directory and the database, not the API)."""

from __future__ import annotations

from pathlib import Path

import click

from modelhost.settings import load_settings

_HOME = click.option("--home", help="Data directory (default $MODELHOST_HOME or ~/.modelhost).")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_HOME
@click.option(
    "--no-key",
    is_flag=True,
    help="Leave server.key out (keep it elsewhere); restored without it, secrets are unreadable.",
)
def backup(directory: Path, home: str | None, no_key: bool) -> None:
    """Back the server up into DIRECTORY (new or empty), while it serves: the database, the
    bundles, server.key and a manifest with their sha256."""
    from modelhost import backups

    outcome = backups.backup(load_settings({"home": home}), directory, key=not no_key)
    for warning in outcome.warnings:
        click.echo(f"Warning: {warning}", err=True)
    key = ", server.key" if outcome.key else " (no server.key)"
    click.echo(
        f"Backed up to {outcome.directory}: the {outcome.database} database, "
        f"{outcome.bundles} bundle(s){key}."
    )


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_HOME
def restore(directory: Path, home: str | None) -> None:
    """Restore the backup in DIRECTORY into a fresh data directory and an empty database
    (setting database_url), after checking every file against its manifest."""
    from modelhost import backups

    outcome = backups.restore(load_settings({"home": home}), directory)
    for warning in outcome.warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(
        f"Restored into {outcome.directory}: the {outcome.database} database and "
        f"{outcome.bundles} bundle(s). Start it with 'modelhost serve'."
    )


COMMANDS = [backup, restore]
