"""``modelhost envs``: named environments, and pruning the environment cache."""

from __future__ import annotations

import click

from modelhost.builder.packing import human_size
from modelhost.cli.connection import Connection, pass_connection
from modelhost.cli.output import format_option, print_json, table


@click.group()
def envs() -> None:
    """Named environments: requirements locked once, for any model to use."""


@envs.command("create")
@click.argument("name")
@click.option(
    "--requirements",
    "requirements_file",
    required=True,
    type=click.File("r", encoding="utf-8"),
    help="A requirements.txt file ('-' for standard input).",
)
@click.option("--python", help="Python version, such as 3.11 (default: the server's).")
@pass_connection
def envs_create(
    conn: Connection, name: str, requirements_file: click.File, python: str | None
) -> None:
    """Lock the requirements as environment NAME, or as its next revision if they changed.

    Publish with it: modelhost publish ... --environment NAME.
    """
    requirements = requirements_file.read()  # type: ignore[attr-defined]
    env = conn.client.create_environment(name, requirements, python=python)
    state = "created" if env["created"] else "unchanged"
    if env["created"] and env["revision"] > 1:
        state = "new revision"
    click.echo(
        f"{env['name']} revision {env['revision']} ({state}): Python {env['python_version']}, "
        f"{len(env['packages'])} package(s): {', '.join(env['packages']) or '(none)'}"
    )


@envs.command("list")
@format_option
@pass_connection
def envs_list(conn: Connection, as_json: bool) -> None:
    """List the named environments at their newest revisions."""
    found = conn.client.environments()
    if as_json:
        print_json(found)
        return
    table(
        [
            (
                e["name"],
                e["revision"],
                e["python_version"],
                len(e["packages"]),
                "yes" if e["built"] else "no",
                e["created_by"],
                e["created_at"],
            )
            for e in found
        ],
        ["NAME", "REVISION", "PYTHON", "PACKAGES", "BUILT", "CREATED BY", "CREATED"],
    )


@envs.command("show")
@click.argument("name")
@click.option("--revision", type=int, help="This revision (default: the newest).")
@format_option
@pass_connection
def envs_show(conn: Connection, name: str, revision: int | None, as_json: bool) -> None:
    """Show a named environment: its requirements, locked packages and revisions."""
    env = conn.client.environment(name, revision=revision)
    if as_json:
        print_json(env)
        return
    click.echo(f"{'name:':13} {env['name']}")
    click.echo(f"{'revision:':13} {env['revision']} of {len(env['revisions'])}")
    click.echo(f"{'python:':13} {env['python_version']} ({env['interpreter']})")
    click.echo(f"{'built:':13} {'yes' if env['built'] else 'no'} ({env['environment_hash'][:12]})")
    click.echo(f"{'created:':13} {env['created_at']} by {env['created_by']}")
    click.echo("requirements:")
    click.echo("  " + (env["requirements"].rstrip() or "(none)").replace("\n", "\n  "))
    click.echo("locked packages:")
    click.echo("  " + ("\n  ".join(env["packages"]) or "(none)"))


@envs.command("prune")
@pass_connection
def envs_prune(conn: Connection) -> None:
    """Delete cached environments that no version uses (server admins).

    A version that needs one again rebuilds it from its stored lock.
    """
    pruned = conn.client.prune_environments()
    count = len(pruned["removed"])
    click.echo(f"Removed {count} environment(s), {human_size(pruned['freed_bytes'])} freed.")


COMMANDS = [envs]
