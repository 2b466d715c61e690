"""``modelhost envs``: named environments, and pruning the environment cache."""

from __future__ import annotations

import os

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
    type=click.File("r", encoding="utf-8"),
    help="A requirements.txt file ('-' for standard input): a Python environment.",
)
@click.option("--python", help="Python version, such as 3.11 (default: the server's).")
@click.option(
    "--r-library",
    help="An R environment instead: a directory on the server of installed R packages (made "
    "with renv or R CMD INSTALL -l DIR), which R versions then see with base R only.",
)
@pass_connection
def envs_create(
    conn: Connection,
    name: str,
    requirements_file: click.File | None,
    python: str | None,
    r_library: str | None,
) -> None:
    """Lock the requirements as environment NAME, or as its next revision if they changed;
    or, with --r-library DIR, register an R library as environment NAME.

    Publish with it: modelhost publish ... --environment NAME.
    """
    if (requirements_file is None) == (r_library is None):
        raise click.UsageError("Give --requirements FILE (Python) or --r-library DIR (R).")
    if r_library is not None:
        if python:
            raise click.UsageError("--python is for Python environments; leave it out.")
        # the CLI usually runs on the server's machine: a relative path means from here
        env = conn.client.create_environment(name, r_library=os.path.abspath(r_library))
    else:
        requirements = requirements_file.read()  # type: ignore[union-attr]
        env = conn.client.create_environment(name, requirements, python=python)
    state = "created" if env["created"] else "unchanged"
    if env["created"] and env["revision"] > 1:
        state = "new revision"
    if env.get("kind") == "r":
        click.echo(
            f"{env['name']} revision {env['revision']} ({state}): R library {env['r_library']}, "
            f"{len(env['packages'])} package(s): {', '.join(env['packages'])}"
        )
        return
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
                e.get("kind", "python"),
                e["revision"],
                e["python_version"] or "-",
                len(e["packages"]),
                "yes" if e["built"] else "no",
                e["created_by"],
                e["created_at"],
            )
            for e in found
        ],
        ["NAME", "KIND", "REVISION", "PYTHON", "PACKAGES", "BUILT", "CREATED BY", "CREATED"],
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
    if env.get("kind") == "r":
        click.echo(f"{'kind:':13} R library")
        click.echo(f"{'library:':13} {env['r_library']}{'' if env['built'] else ' (missing!)'}")
        click.echo(f"{'R:':13} {env['interpreter']}")
        click.echo(f"{'created:':13} {env['created_at']} by {env['created_by']}")
        click.echo("packages:")
        click.echo("  " + ("\n  ".join(env["packages"]) or "(none)"))
        return
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
