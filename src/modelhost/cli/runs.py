"""``modelhost run``, ``modelhost runs ...`` and ``modelhost schedules ...``."""

from __future__ import annotations

import shlex
import time
from typing import Any

import click

from modelhost import errors
from modelhost.cli.connection import Connection, pass_connection
from modelhost.cli.output import format_option, print_json, show_fields, table
from modelhost.cli.params import FiniteFloatRange
from modelhost.client import Run, Schedule

_COMMAND = click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)


def _publish_options(function: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--publish-model",
                "model",
                help="When the command exits with status 0, publish the run's directory as "
                "the next version of this model.",
            ),
            click.option("--file", "file_", help="Script to publish, e.g. predict.py."),
            click.option("--function", help="Function to publish, e.g. predict."),
            click.option("--exclude", multiple=True, help="Glob to leave out (repeatable)."),
            click.option(
                "--timeout",
                type=FiniteFloatRange(min=0, min_open=True),
                help="Seconds a run may take before it is killed (server default: 1 hour).",
            ),
            click.option("--description", default="", help="What this is for."),
            click.option(
                "--environment",
                help="server, isolated or a named environment to run in (default: isolated "
                "when the project has requirements.txt or pyproject dependencies, else server).",
            ),
        ]
    ):
        function = option(function)
    return function


def _check_publish(model: str | None, file_: str | None, function: str | None) -> None:
    if model and not (file_ and function):
        raise click.UsageError("--publish-model needs --file and --function (what to publish).")
    if (file_ or function) and not model:
        raise click.UsageError("--file and --function go with --publish-model MODEL.")


def _follow(conn: Connection, run: Run) -> None:
    """Print the run's log as it grows; exit with the run's outcome."""
    try:
        final = conn.client.follow_run(run["id"], on_output=lambda text: click.echo(text, nl=False))
    except KeyboardInterrupt:
        click.echo(
            f"\nStopped following; run {run['id']} goes on. Follow it again with "
            f"'modelhost runs logs {run['id']} --follow', or stop it with "
            f"'modelhost runs cancel {run['id']}'.",
            err=True,
        )
        raise SystemExit(130) from None
    _outcome(conn, final)


def _outcome(conn: Connection, run: Run) -> None:
    """The outcome of a run whose log was just followed: the log's last lines said how it
    ended, so a success is not told again."""
    if run["status"] != "succeeded":
        if run["published_version"] is not None and run["model"]:
            _show_build_log(conn, run["model"], run["published_version"])
        raise errors.ModelhostError(f"Run {run['id']} {run['status']}: {run['message']}")
    click.echo(f"Run {run['id']} succeeded.")
    if run["published_version"] is not None and run["model"]:
        version = conn.client.wait_for_version(run["model"], run["published_version"])
        click.echo(
            f"Version {version['number']} of {run['model']} is {version['status']}: "
            f"{version.get('signature') or version['entry_point']}"
        )


def _show_build_log(conn: Connection, model: str, number: int) -> None:
    """The build log of the version a failed run published, as 'publish' shows it."""
    try:
        version = conn.client.version(model, number)
    except errors.ModelhostError:  # deleted since, or no longer ours to see
        return
    if version["status"] == "failed" and version["build_log"]:
        click.echo(version["build_log"].rstrip(), err=True)


@click.command()
@click.argument("path", type=click.Path(file_okay=False))
@_publish_options
@click.option("--detach", is_flag=True, help="Return once the run is queued; do not follow it.")
@_COMMAND
@pass_connection
def run(
    conn: Connection,
    path: str,
    model: str | None,
    file_: str | None,
    function: str | None,
    exclude: tuple[str, ...],
    timeout: float | None,
    description: str,
    environment: str | None,
    detach: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND on the server in a fresh copy of the project at PATH.

    \b
    modelhost run examples/wine_quality -- python train.py
    modelhost run . --publish-model wine-quality --file predict.py --function predict \\
        -- python train.py

    Follows the run's output and exits with its outcome, unless --detach.
    """
    _check_publish(model, file_, function)
    started = conn.client.start_run(
        path,
        list(command),
        model=model,
        file=file_,
        function=function,
        exclude=exclude,
        timeout=timeout,
        description=description,
        environment=environment,
        on_progress=lambda message: click.echo(message, err=True),
    )
    click.echo(f"Run {started['id']} is queued: {shlex.join(started['command'])}", err=True)
    if detach:
        click.echo(started["id"])
        return
    _follow(conn, started)


@click.group()
def runs() -> None:
    """List, show, follow and cancel runs."""


@runs.command("list")
@click.option("--model", help="Only runs that publish to this model.")
@click.option("--schedule", help="Only runs of this schedule.")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="At most this many.",
)
@format_option
@pass_connection
def runs_list(
    conn: Connection, model: str | None, schedule: str | None, limit: int, as_json: bool
) -> None:
    """List runs, newest first."""
    found = conn.client.runs(model=model, schedule=schedule, limit=limit)
    if as_json:
        print_json(found)
        return
    table(
        [
            (
                r["id"],
                r["status"],
                r["model"] or "",
                r["published_version"],
                r["created_at"],
                "" if r["duration_seconds"] is None else f"{r['duration_seconds']:.1f}s",
                shlex.join(r["command"]),
            )
            for r in found
        ],
        ["ID", "STATUS", "MODEL", "PUBLISHED", "CREATED", "DURATION", "COMMAND"],
    )


@runs.command("show")
@click.argument("run_id")
@format_option
@pass_connection
def runs_show(conn: Connection, run_id: str, as_json: bool) -> None:
    """Show one run."""
    found = conn.client.run(run_id)
    if as_json:
        print_json(found)
        return
    for key in (
        "id",
        "status",
        "message",
        "exit_code",
        "command",
        "model",
        "entry_point",
        "published_version",
        "schedule_id",
        "owner",
        "created_at",
        "started_at",
        "finished_at",
        "duration_seconds",
        "timeout_seconds",
    ):
        value = found[key]
        if key == "command":
            value = shlex.join(value)
        click.echo(f"{key + ':':19} {'' if value is None else value}")


@runs.command("logs")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run ends.")
@pass_connection
def runs_logs(conn: Connection, run_id: str, follow: bool) -> None:
    """Print a run's log (stdout and stderr)."""
    if follow:
        _follow(conn, conn.client.run(run_id))
        return
    offset = 0
    while True:
        chunk = conn.client.run_logs(run_id, offset)
        click.echo(chunk["text"], nl=False)
        if not chunk["text"]:
            return
        offset = chunk["offset"]


@runs.command("cancel")
@click.argument("run_id")
@pass_connection
def runs_cancel(conn: Connection, run_id: str) -> None:
    """Cancel a queued run, or kill a running one with every process it started."""
    found = conn.client.cancel_run(run_id)
    if found["status"] == "cancelled":
        click.echo(f"Run {run_id} is cancelled.")
        return
    for _ in range(100):  # the run loop kills it within a tick
        time.sleep(0.1)
        found = conn.client.run(run_id)
        if found["status"] != "running":
            break
    click.echo(f"Run {run_id}: {found['status']} {found['message']}".rstrip())


@click.group()
def schedules() -> None:
    """Run a command on a schedule, optionally publishing each successful run."""


def _schedule_options(function: Any) -> Any:
    function = _publish_options(function)
    for option in reversed(
        [
            click.option(
                "--cron", help="Five-field cron expression, such as '0 2 * * *' (02:00 daily)."
            ),
            click.option(
                "--timezone", help="IANA time zone the cron expression is read in (default UTC)."
            ),
            click.option("--every", help="Instead of --cron: an interval, such as 30m, 6h or 1d."),
        ]
    ):
        function = option(function)
    return function


def _store_schedule(
    conn: Connection,
    schedule_id: str | None,
    path: str,
    command: tuple[str, ...],
    **options: Any,
) -> Schedule:
    if (options["cron"] is None) == (options["every"] is None):
        raise click.UsageError("Give exactly one of --cron or --every.")
    if options["timezone"] and not options["cron"]:
        raise click.UsageError("--timezone goes with --cron.")
    _check_publish(options["model"], options["file"], options["function"])

    def say(message: str) -> None:
        click.echo(message, err=True)

    if schedule_id is None:
        return conn.client.create_schedule(path, list(command), on_progress=say, **options)
    return conn.client.replace_schedule(
        schedule_id, path, list(command), on_progress=say, **options
    )


@schedules.command("create")
@click.argument("path", type=click.Path(file_okay=False))
@_schedule_options
@_COMMAND
@pass_connection
def schedules_create(
    conn: Connection, path: str, file_: str | None, command: tuple[str, ...], **options: Any
) -> None:
    """Run COMMAND in a fresh copy of the project at PATH (as it is now) on a schedule.

    \b
    modelhost schedules create examples/wine_quality --cron '0 2 * * *' \\
        --timezone Europe/Berlin --publish-model wine-quality --file predict.py \\
        --function predict -- python train.py
    """
    found = _store_schedule(conn, None, path, command, file=file_, **options)
    click.echo(f"Schedule {found['id']}: {found['when']}; next run at {found['next_run_at']}.")


@schedules.command("update")
@click.argument("schedule_id")
@click.argument("path", type=click.Path(file_okay=False))
@_schedule_options
@_COMMAND
@pass_connection
def schedules_update(
    conn: Connection,
    schedule_id: str,
    path: str,
    file_: str | None,
    command: tuple[str, ...],
    **options: Any,
) -> None:
    """Replace SCHEDULE_ID's project (PATH, uploaded again), timing, target and COMMAND.

    Takes the options of 'schedules create'; the schedule keeps its id, its runs and whether
    it is paused.
    """
    found = _store_schedule(conn, schedule_id, path, command, file=file_, **options)
    next_run = "paused" if found["paused"] else f"next run at {found['next_run_at']}"
    click.echo(f"Schedule {found['id']}: {found['when']}; {next_run}.")


#: what ``schedules show`` prints, in this order (the fields a server sends)
SCHEDULE_FIELDS = (
    "id",
    "when",
    "timezone",
    "next_run_at",
    "last_run",
    "command",
    "model",
    "entry_point",
    "environment",
    "timeout_seconds",
    "owner",
    "description",
    "created_at",
    "updated_at",
)


@schedules.command("list")
@format_option
@pass_connection
def schedules_list(conn: Connection, as_json: bool) -> None:
    """List schedules."""
    found = conn.client.schedules()
    if as_json:
        print_json(found)
        return
    table(
        [
            (
                s["id"],
                s["when"],
                s["model"] or "",
                "paused" if s["paused"] else s["next_run_at"],
                s["last_run"]["status"] if s["last_run"] else "",
                shlex.join(s["command"]),
            )
            for s in found
        ],
        ["ID", "WHEN", "MODEL", "NEXT RUN", "LAST RUN", "COMMAND"],
    )


@schedules.command("show")
@click.argument("schedule_id")
@format_option
@pass_connection
def schedules_show(conn: Connection, schedule_id: str, as_json: bool) -> None:
    """Show one schedule, with its last run."""
    found = conn.client.schedule(schedule_id)
    if as_json:
        print_json(found)
        return
    shown = {
        **found,
        "command": shlex.join(found["command"]),
        "next_run_at": "paused" if found["paused"] else found["next_run_at"],
        "last_run": (
            f"{found['last_run']['id']} {found['last_run']['status']}"
            if found.get("last_run")
            else None
        ),
    }
    keys = [k for k in SCHEDULE_FIELDS if k in shown]
    show_fields(shown, keys)


@schedules.command("pause")
@click.argument("schedule_id")
@pass_connection
def schedules_pause(conn: Connection, schedule_id: str) -> None:
    """Stop firing the schedule until it is resumed (a run in progress goes on)."""
    conn.client.pause_schedule(schedule_id)
    click.echo(f"Schedule {schedule_id} is paused.")


@schedules.command("resume")
@click.argument("schedule_id")
@pass_connection
def schedules_resume(conn: Connection, schedule_id: str) -> None:
    """Fire the schedule again, from its next due time after now."""
    found = conn.client.resume_schedule(schedule_id)
    click.echo(f"Schedule {schedule_id} is resumed; next run at {found['next_run_at']}.")


@schedules.command("take-over")
@click.argument("schedule_id")
@pass_connection
def schedules_take_over(conn: Connection, schedule_id: str) -> None:
    """Make the schedule run as you: for its model's owner, or an admin."""
    found = conn.client.take_over_schedule(schedule_id)
    state = "paused; resume it with 'modelhost schedules resume'" if found["paused"] else "active"
    click.echo(f"Schedule {schedule_id} now runs as {found['owner']} ({state}).")


@schedules.command("delete")
@click.argument("schedule_id")
@pass_connection
def schedules_delete(conn: Connection, schedule_id: str) -> None:
    """Delete a schedule; its runs are kept."""
    conn.client.delete_schedule(schedule_id)
    click.echo(f"Schedule {schedule_id} is deleted.")


COMMANDS = [run, runs, schedules]
