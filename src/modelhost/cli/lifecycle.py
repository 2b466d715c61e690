"""Lifecycle commands: deploy, rollback, promote, routing, label, scale, stop, start, restart,
unpublish, delete, env, instances."""

from __future__ import annotations

import sys
from typing import Any

import click

from modelhost.cli.connection import Connection, pass_connection
from modelhost.cli.output import format_option, print_json, table
from modelhost.client import Instance


def _moved(result: dict[str, object]) -> None:
    if result["from"] == result["to"]:
        click.echo(
            f"{result['model']}: route '{result['route']}' already serves version "
            f"{result['to']}; nothing changed."
        )
        return
    moves = (
        f"moves from version {result['from']} to version {result['to']}"
        if result["from"] is not None
        else f"serves version {result['to']}"
    )
    state = result.get("model_state")
    if state in ("stopped", "archived"):  # nothing runs until the model is started
        how = "stopped" if state == "stopped" else "unpublished"
        click.echo(
            f"{result['model']}: route '{result['route']}' {moves} once the model runs: it is "
            f"{how}; 'modelhost start {result['model']}' starts it."
        )
        return
    click.echo(
        f"{result['model']}: route '{result['route']}' {moves} once its instances are ready."
    )


@click.command()
@click.argument("model")
@click.option("--version", "number", type=int, required=True, help="Version to serve.")
@pass_connection
def deploy(conn: Connection, model: str, number: int) -> None:
    """Serve version N of MODEL (latest in basic routing, prod in advanced)."""
    _moved(conn.client.deploy(model, number))


@click.command()
@click.argument("model")
@pass_connection
def rollback(conn: Connection, model: str) -> None:
    """Serve the newest ready version older than the one serving now."""
    _moved(conn.client.rollback(model))


@click.command()
@click.argument("model")
@click.option("--version", "number", type=int, help="Version to promote (default: newest).")
@pass_connection
def promote(conn: Connection, model: str, number: int | None) -> None:
    """Point MODEL's prod label at a version."""
    label = conn.client.promote(model, number)
    click.echo(f"{model}: prod -> version {label['version']}")


@click.command()
@click.argument("model")
@click.argument("mode", type=click.Choice(["basic", "advanced"]))
@pass_connection
def routing(conn: Connection, model: str, mode: str) -> None:
    """Set MODEL's routing mode: basic (latest serves the deployed version) or advanced
    (latest serves the newest version; prod serves the promoted one)."""
    conn.client.set_routing(model, mode)
    click.echo(f"{model}: routing is {mode}")


@click.command()
@click.argument("model")
@click.argument("label", required=False)
@click.option("--version", "number", type=int, help="Version the label points at.")
@click.option("--canary", type=int, help="A second version that gets --weight % of calls.")
@click.option("--weight", type=click.IntRange(0, 100), default=0, help="Canary percentage.")
@click.option("--delete", "remove", is_flag=True, help="Remove the label.")
@pass_connection
def label(
    conn: Connection,
    model: str,
    label: str | None,
    number: int | None,
    canary: int | None,
    weight: int,
    remove: bool,
) -> None:
    """List MODEL's labels, or point LABEL at a version (with an optional canary)."""
    if label is None:
        rows = [
            (x["name"], x["version"], x["canary_version"] or "", x["canary_weight"] or "")
            for x in conn.client.labels(model)
        ]
        table(rows, ["LABEL", "VERSION", "CANARY", "WEIGHT"])
        return
    if remove:
        conn.client.delete_label(model, label)
        click.echo(f"{model}: label {label} removed")
        return
    if number is None:
        raise click.UsageError("Give --version N (or --delete).")
    result = conn.client.set_label(
        model, label, number, canary_version=canary, canary_weight=weight
    )
    canary_text = (
        f", {result['canary_weight']}% to version {result['canary_version']}"
        if result["canary_version"]
        else ""
    )
    click.echo(f"{model}: {label} -> version {result['version']}{canary_text}")


@click.command()
@click.argument("model")
@click.argument("instances", type=click.IntRange(min=1))
@pass_connection
def scale(conn: Connection, model: str, instances: int) -> None:
    """Run INSTANCES instances of each serving version of MODEL."""
    conn.client.scale(model, instances)
    click.echo(f"{model}: {instances} instance(s)")


def _where(instance: Instance) -> str:
    """Its Ray node, "-" for one no Ray node has taken yet, or "local"."""
    if instance.node:
        return instance.node
    return "-" if instance.state == "pending" else "local"


@click.command()
@click.argument("model")
@format_option
@pass_connection
def instances(conn: Connection, model: str, as_json: bool) -> None:
    """List MODEL's instances: version, state, where each runs (its Ray node with
    backend = ray, its process id with the local backend) and how it gets its hardware
    tier's CPUs."""
    found = conn.client.instances(model)
    if as_json:
        print_json(found)
        return
    rows = [
        (
            i.id,
            i.version,
            i.state,
            "yes" if i.busy else "no",
            _where(i),
            i.pid,
            _cpus(i.cpu_limit),
        )
        for i in found
    ]
    table(rows, ["INSTANCE", "VERSION", "STATE", "BUSY", "NODE", "PID", "CPUS"])
    for i in found:  # a pending instance says what it waits for, a failed one why
        if i.message or i.failure:
            click.echo(f"{i.id}: {i.message or i.failure}")


def _cpus(limit: dict[str, Any] | None) -> str:
    """``0.5 (cgroup v2)``, ``1 (cores 0)``, or ``-`` without a tier (or on Ray)."""
    if not limit:
        return "-"
    how = limit["mechanism"]
    if limit.get("cores"):
        how = "cores " + ",".join(map(str, limit["cores"]))
    return f"{limit['cpus']:g} ({how})"


@click.command()
@click.argument("model")
@click.option("--version", "number", type=int, help="Stop only this version.")
@pass_connection
def stop(conn: Connection, model: str, number: int | None) -> None:
    """Stop MODEL (or one version); its URLs answer 503 until started."""
    conn.client.stop(model, number)
    click.echo(f"{model}: {'version ' + str(number) if number else 'model'} stopped")


@click.command()
@click.argument("model")
@click.option("--version", "number", type=int, help="Keep this version running.")
@pass_connection
def start(conn: Connection, model: str, number: int | None) -> None:
    """Start a stopped or unpublished MODEL, or keep one version running."""
    conn.client.start(model, number)
    click.echo(f"{model}: {'version ' + str(number) if number else 'model'} started")


@click.command()
@click.argument("model")
@pass_connection
def restart(conn: Connection, model: str) -> None:
    """Replace every instance of MODEL with a fresh one, with zero downtime."""
    conn.client.restart(model)
    click.echo(f"{model}: restarting")


@click.command()
@click.argument("model")
@pass_connection
def unpublish(conn: Connection, model: str) -> None:
    """Stop MODEL and archive it (its data is kept; 'start' brings it back)."""
    conn.client.unpublish(model)
    click.echo(f"{model}: unpublished")


@click.command()
@click.argument("model")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_connection
def delete(conn: Connection, model: str, yes: bool) -> None:
    """Delete MODEL with all its versions, logs and data."""
    name = conn.client.model(model)["name"]
    if not yes:
        try:
            typed = click.prompt(
                f"This deletes '{name}' and all its data. Type its name to confirm"
            )
        except click.Abort:
            if sys.stdin.isatty():
                raise  # Ctrl-C or Ctrl-D at the prompt: click says "Aborted!"
            raise click.ClickException(
                "No confirmation came: the input ended before the model's name. Pass --yes to "
                "delete without asking (in a script), or run it in a terminal; nothing was "
                "deleted."
            ) from None
        if typed != name:
            raise click.ClickException("The name did not match; nothing was deleted.")
    conn.client.delete(model, confirm=name)
    click.echo(f"{name}: deleted")


@click.group()
def env() -> None:
    """Environment variables of a model's instances."""


@env.command("list")
@click.argument("model")
@format_option
@pass_connection
def env_list(conn: Connection, model: str, as_json: bool) -> None:
    """List MODEL's variables (secret values are not shown)."""
    found = conn.client.env(model)
    if as_json:
        print_json(found)
        return
    rows = [(v["name"], "(secret)" if v["secret"] else v["value"]) for v in found]
    table(rows, ["NAME", "VALUE"])


@env.command("set")
@click.argument("model")
@click.argument("assignment", metavar="NAME[=VALUE]")
@click.option(
    "--secret",
    is_flag=True,
    help="Encrypt the value; it is never shown again. Without =VALUE, the value is asked for "
    "(hidden) or read from stdin, so it stays out of the command line and shell history.",
)
@pass_connection
def env_set(conn: Connection, model: str, assignment: str, secret: bool) -> None:
    """Set a variable; MODEL's instances restart with zero downtime."""
    name, sep, value = assignment.partition("=")
    if not name:
        raise click.UsageError(
            f"'{assignment}' has no variable name: write NAME=VALUE, such as API_URL=https://..."
        )
    if not sep:
        if not secret:
            raise click.UsageError(
                "Write the variable as NAME=VALUE, or as NAME with --secret to be asked for "
                "the value."
            )
        value = _read_secret(name)
    conn.client.set_env(model, name, value, secret=secret)
    click.echo(f"{model}: {name} set{' (secret)' if secret else ''}; instances restart")


def _read_secret(name: str) -> str:
    """A secret value from a hidden prompt, or from stdin when it is not a terminal
    (``modelhost env set m TOKEN --secret < token.txt``); one final newline is dropped."""
    if sys.stdin.isatty():
        return str(click.prompt(f"Value of {name}", hide_input=True))
    value = sys.stdin.read()
    value = value[:-1] if value.endswith("\n") else value
    if not value:
        raise click.ClickException(
            f"No value for {name} came on stdin; pipe it in (modelhost env set MODEL {name} "
            "--secret < file), or run it in a terminal to be asked for it."
        )
    return value


@env.command("unset")
@click.argument("model")
@click.argument("name")
@pass_connection
def env_unset(conn: Connection, model: str, name: str) -> None:
    """Remove a variable; MODEL's instances restart with zero downtime."""
    conn.client.unset_env(model, name)
    click.echo(f"{model}: {name} removed; instances restart")


COMMANDS = [
    instances,
    deploy,
    rollback,
    promote,
    routing,
    label,
    scale,
    stop,
    start,
    restart,
    unpublish,
    delete,
    env,
]
