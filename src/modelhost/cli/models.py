"""Commands on models and their versions: publish, models, versions, call, logs, metrics,
openapi."""

from __future__ import annotations

import json
import time
from pathlib import Path, PurePosixPath
from typing import IO, Any

import click

from modelhost import errors
from modelhost.cli.connection import Connection, pass_connection
from modelhost.cli.output import format_option, print_json, show_fields, table
from modelhost.cli.params import FiniteFloatRange
from modelhost.client import Version


def _json_option(text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint=option) from None
    except RecursionError:
        raise click.BadParameter("nested too deeply to read", param_hint=option) from None


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, but they are not JSON and no model receives them.
    raise ValueError(f"{name} is not a JSON value; use null for a missing number")


@click.command()
@click.argument("target")
@click.option("--name", required=True, help="Model name; created if new, else a new version.")
@click.option("--file", "file_", help="Script in the project, e.g. predict.py.")
@click.option("--function", help="Function in the script, e.g. predict.")
@click.option("--exclude", multiple=True, help="Glob to leave out (repeatable).")
@click.option("--description", default="", help="What changed in this version.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=1,
    help="Calls one instance runs at once (only for thread-safe functions).",
)
@click.option(
    "--environment",
    metavar="server|isolated|NAME",
    help="What the version runs in: the server's Python, an isolated environment built from "
    "the project's requirements.txt or pyproject.toml, or a named environment (modelhost "
    "envs). Default: isolated when the project declares dependencies, else server.",
)
@click.option("--python", help="Python version of an isolated environment, such as 3.11.")
@click.option(
    "--example",
    metavar="FILE|JSON",
    help="An example input for the tester and the code snippets: a JSON file, or JSON text such "
    'as \'{"data": {"x": 1}}\'. Default: the project\'s example.json, if it has one.',
)
@click.option(
    "--batch-max-size",
    type=click.IntRange(1, 1024),
    help="Publish a batching function: it takes a list of inputs (each call's data object or "
    "parameters array) and returns a list of results. Calls that arrive while every instance "
    "is busy leave together, at most this many at a time.",
)
@click.option(
    "--batch-max-wait-ms",
    type=FiniteFloatRange(0, 10_000),
    help="With --batch-max-size: how long calls wait for company while every instance is "
    "busy (default 5).",
)
@click.option(
    "--fork/--no-fork",
    default=True,
    help="Fork every instance, the first one too, from a process that imported the script "
    "once (the version's fork server), so they share its memory (the default, Python only); "
    "--no-fork starts each instance fresh, for libraries that do not survive a fork (threads "
    "started at import, CUDA, some gRPC clients).",
)
@click.option("--no-wait", is_flag=True, help="Return once uploaded, without waiting.")
@pass_connection
def publish(
    conn: Connection,
    target: str,
    name: str,
    file_: str | None,
    function: str | None,
    exclude: tuple[str, ...],
    description: str,
    concurrency: int,
    environment: str | None,
    python: str | None,
    example: str | None,
    batch_max_size: int | None,
    batch_max_wait_ms: float | None,
    fork: bool,
    no_wait: bool,
) -> None:
    """Publish TARGET as a model version: a project directory, PATH/script.py:function, or a
    git repository as git+URL@REF (with --file and --function).

    Waits until the version is running, printing its build log as it grows.
    """
    if batch_max_wait_ms is not None and batch_max_size is None:
        raise click.UsageError(
            "--batch-max-wait-ms needs --batch-max-size: give both to publish a batching "
            "function (one that takes a list of inputs and returns a list of results)."
        )
    try:
        version = conn.client.publish(
            target,
            name=name,
            file=file_,
            function=function,
            exclude=exclude,
            description=description,
            concurrency=concurrency,
            environment=environment,
            python=python,
            example=_example(example),
            batch_max_size=batch_max_size,
            batch_max_wait_ms=batch_max_wait_ms,
            fork=fork,
            wait=not no_wait,
            on_progress=click.echo,
            on_log=lambda line: click.echo(f"  {line}"),
        )
    except errors.BuildFailed as exc:  # its log is printed already
        raise errors.BuildFailed(exc.message) from None
    except KeyboardInterrupt:
        click.echo(
            f"\nStopped waiting. A version whose upload finished goes on building on the "
            f"server: 'modelhost versions {name}' shows it.",
            err=True,
        )
        raise SystemExit(130) from None
    if no_wait:
        return
    model = conn.client.model(name)
    name = model["name"]  # --name may have been the model's id
    click.echo(
        f"Version {version['number']} of {name} is {version['status']}: "
        f"{version.get('signature') or version['entry_point']}"
    )
    batch = version.get("batch")
    if batch:
        click.echo(
            f"It batches: at most {batch['max_size']} calls at once, waiting at most "
            f"{batch['max_wait_ms']:g} ms for company while every instance is busy."
        )
    if model.get("state") in ("stopped", "archived"):
        how = "stopped" if model["state"] == "stopped" else "unpublished"
        click.echo(
            f"The model is {how}, so no call reaches it: 'modelhost start {name}' serves "
            "this version."
        )
        return
    click.echo(f"Call it: POST {conn.client.url}/models/{name}/latest/model {_call_hint(version)}")
    if model.get("invocation_mode") == "token":
        click.echo(
            f"Callers need an access token: modelhost tokens create {name} --name WHO, then "
            "curl -u TOKEN:TOKEN ..."
        )


def _call_hint(version: Version) -> str:
    """How a call's body reaches the function: as its arguments, or for a batching function
    as one element of the list it gets."""
    if not version.get("batch"):
        return (
            'with a JSON body {"data": {...}} (keyword arguments) or {"parameters": [...]} '
            "(positional)."
        )
    function = version.get("function") or "the function"
    return (
        'with a JSON body {"data": {...}} or {"parameters": [...]}, one input per call: each '
        f"call's data object or parameters array is one element of the list {function} gets, "
        "and its answer the matching element of the list it returns."
    )


def _example(value: str | None) -> str | Path | None:
    """--example: JSON text when it looks like a JSON object, else the path of a file."""
    if value is None or value.lstrip().startswith("{"):
        return value
    path = Path(value)
    if not path.is_file():
        raise errors.BadRequest(
            f"--example: there is no file '{value}'. Give a JSON file, or JSON text such as "
            '\'{"data": {"x": 1}}\'.'
        )
    return path


@click.group()
def models() -> None:
    """List, show and change models."""


@models.command("list")
@format_option
@pass_connection
def models_list(conn: Connection, as_json: bool) -> None:
    """List the models."""
    found = conn.client.models()
    if as_json:
        print_json(found)
        return
    table(
        [
            (m["name"], m["id"], m["status"], m["latest_version"], m["instance_count"], m["owner"])
            for m in found
        ],
        ["NAME", "ID", "STATUS", "LATEST", "INSTANCES", "OWNER"],
    )


@models.command("show")
@click.argument("model")
@format_option
@pass_connection
def models_show(conn: Connection, model: str, as_json: bool) -> None:
    """Show one model."""
    found = conn.client.model(model)
    if as_json:
        print_json(found)
        return
    show_fields(
        found,
        [
            "name",
            "id",
            "status",
            "description",
            "owner",
            "latest_version",
            "newest_version",
            "routing_mode",
            "labels",
            "instance_count",
            "timeout_seconds",
            "visibility",
            "invocation_mode",
            "log_requests",
            "network",
            "capture",
            "capture_share",
            "tier",
            "created_at",
            "updated_at",
        ],
    )


@models.command("update")
@click.argument("model")
@click.option("--instances", type=click.IntRange(min=1), help="Number of instances.")
@click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True), help="Call timeout (s).")
@click.option("--description", help="New description.")
@click.option(
    "--log-requests/--no-log-requests",
    default=None,
    help="Write each call's input and output to the instance log.",
)
@click.option(
    "--network/--no-network",
    default=None,
    help="Let the model's code reach the network (the default), or cut it off in its sandbox.",
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    help="The batching version whose --batch-max-size or --batch-max-wait-ms to change.",
)
@click.option("--batch-max-size", type=click.IntRange(1, 1024), help="Largest batch.")
@click.option(
    "--batch-max-wait-ms",
    type=FiniteFloatRange(0, 10_000),
    help="How long calls wait for company while every instance is busy.",
)
@click.option(
    "--capture/--no-capture",
    default=None,
    help="Prediction capture: record successful calls' inputs and outputs (audited).",
)
@click.option(
    "--capture-share",
    type=FiniteFloatRange(0, 1, min_open=True),
    help="Share of successful calls captured, more than 0 and at most 1 (default 1: all).",
)
@click.option(
    "--tier",
    help="Hardware tier for the instances (setting hardware_tiers); '' for none. They restart "
    "with zero downtime.",
)
@pass_connection
def models_update(
    conn: Connection,
    model: str,
    instances: int | None,
    timeout: float | None,
    description: str | None,
    log_requests: bool | None,
    network: bool | None,
    version: int | None,
    batch_max_size: int | None,
    batch_max_wait_ms: float | None,
    capture: bool | None,
    capture_share: float | None,
    tier: str | None,
) -> None:
    """Change a model's instance count, timeout, description, request logging, network,
    prediction capture or hardware tier, or a batching version's limits (with --version)."""
    if batch_max_size is not None or batch_max_wait_ms is not None:
        if version is None:
            raise click.UsageError(
                "Say which version's batching limits to change: --version N "
                f"(modelhost versions {model} lists them)."
            )
        batching = {"batch_max_size": batch_max_size, "batch_max_wait_ms": batch_max_wait_ms}
        changed = conn.client.update_version(
            model, version, **{k: v for k, v in batching.items() if v is not None}
        )
        limits = changed["batch"]
        click.echo(
            f"Version {version} of {model}: batches of at most {limits['max_size']} calls, "
            f"waiting at most {limits['max_wait_ms']:g} ms for company while instances are busy."
        )
    elif version is not None:
        raise click.UsageError("--version goes with --batch-max-size or --batch-max-wait-ms.")
    changes = {
        "instance_count": instances,
        "timeout_seconds": timeout,
        "description": description,
        "log_requests": log_requests,
        "network": network,
        "capture": capture,
        "capture_share": capture_share,
        "tier": tier,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        if version is not None:
            return
        raise click.UsageError(
            "Give at least one of --instances, --timeout, --description, --log-requests, "
            "--network, --capture, --capture-share, --tier, or --version N with "
            "--batch-max-size or --batch-max-wait-ms."
        )
    updated = conn.client.update_model(model, **changes)
    capture_text = f"on ({updated['capture_share']:g} of calls)" if updated["capture"] else "off"
    click.echo(
        f"{updated['name']}: {updated['instance_count']} instance(s), timeout "
        f"{updated['timeout_seconds']:g} s, request logging "
        f"{'on' if updated['log_requests'] else 'off'}, network "
        f"{'on' if updated['network'] else 'off'}, capture {capture_text}, tier "
        f"{_tier_text(updated['tier'])}"
    )


def _fork_text(version: Version) -> str:
    """Whether the version's instances are forked, and why not: never an R version's (the API
    says ``false`` for it; an older server said ``true``, its stored default)."""
    script = version.get("file") or str(version["entry_point"]).rpartition(":")[0]
    if PurePosixPath(script).suffix in (".R", ".r"):
        return "no (R instances start fresh)"
    return "yes" if version["fork"] else "no (each instance starts fresh)"


def _tier_text(tier: dict[str, Any] | None) -> str:
    if not tier:
        return "none"
    if tier.get("missing"):
        return f"{tier['name']} (no longer defined)"
    gpus = f", {tier['gpus']} GPU" if tier.get("gpus") else ""
    return f"{tier['name']} ({tier['cpus']:g} CPU, {tier['memory_mb']} MB{gpus})"


@click.command()
@click.argument("model")
@click.option("--number", type=int, help="Show this version with its build log.")
@format_option
@pass_connection
def versions(conn: Connection, model: str, number: int | None, as_json: bool) -> None:
    """List a model's versions, or show one with --number."""
    if number is not None:
        version = conn.client.version(model, number)
        if as_json:
            print_json(version)
            return
        for key in (
            "number",
            "status",
            "health",
            "entry_point",
            "signature",
            "environment",
            "python_version",
            "concurrency",
            "batch",
            "fork",
            "bundle_sha256",
            "author",
            "created_at",
            "description",
        ):
            value = version[key]
            if key == "batch" and value is not None:
                value = f"at most {value['max_size']} calls, waiting {value['max_wait_ms']:g} ms"
            if key == "fork" and value is not None:
                value = _fork_text(version)
            click.echo(f"{key + ':':15} {value if value is not None else ''}")
        if version["environment_revision"] is not None:
            click.echo(f"{'revision:':15} {version['environment_revision']}")
        if version["packages"]:
            click.echo(f"{'packages:':15} {', '.join(version['packages'])}")
        if version["source"]:
            click.echo(f"{'source:':15} {version['source']}")
            click.echo(f"{'git commit:':15} {version['git_commit'] or ''}")
        if version["health_log"]:
            click.echo(f"{'health log:':15} {version['health_log']}")
        click.echo("build log:")
        click.echo("  " + version["build_log"].rstrip().replace("\n", "\n  "))
        return
    found = conn.client.versions(model)
    if as_json:
        print_json(found)
        return
    table(
        [
            (
                v["number"],
                v["status"],
                v["health"],
                v["entry_point"],
                _environment_column(v),
                v["bundle_sha256"][:12],
                v["author"],
                v["created_at"],
                v["description"],
            )
            for v in found
        ],
        [
            "VERSION",
            "STATUS",
            "HEALTH",
            "ENTRY POINT",
            "ENVIRONMENT",
            "BUNDLE",
            "AUTHOR",
            "CREATED",
            "DESCRIPTION",
        ],
    )


def _environment_column(version: Version) -> str:
    """``isolated (3.11.7)``, ``sklearn@2 (3.11.7)``, ``server (3.11.7)`` or ``r``."""
    name = version["environment"]
    if version["environment_revision"] is not None:
        name += f"@{version['environment_revision']}"
    return f"{name} ({version['python_version']})" if version["python_version"] else name


@click.command()
@click.argument("model")
@click.option("--data", help="Keyword arguments as a JSON object: '{\"x\": 1}'.")
@click.option("--parameters", help="Positional arguments as a JSON array: '[1, 2]'.")
@click.option("--version", "number", type=int, help="Call this version instead of latest.")
@click.option("--label", help="Call the version this label points at, such as prod.")
@click.option(
    "--token",
    envvar="MODELHOST_TOKEN",
    help="The model's access token (or set MODELHOST_TOKEN, which keeps it out of the "
    "command line).",
)
@click.option("--full", is_flag=True, help="Print the whole response, not just the result.")
@click.option(
    "--async",
    "run_async",
    is_flag=True,
    help="Submit an asynchronous prediction and print its id; get its result with "
    "'modelhost prediction MODEL ID'.",
)
@pass_connection
def call(
    conn: Connection,
    model: str,
    data: str | None,
    parameters: str | None,
    number: int | None,
    label: str | None,
    token: str | None,
    full: bool,
    run_async: bool,
) -> None:
    """Call MODEL with --data or --parameters and print the result."""
    if (data is None) == (parameters is None):
        raise click.UsageError("Give exactly one of --data or --parameters.")
    if number is not None and label is not None:
        raise click.UsageError("Give at most one of --version or --label.")
    kwargs: dict[str, Any] = {}
    if data is not None:
        kwargs["data"] = _json_option(data, "--data")
    else:
        kwargs["parameters"] = _json_option(parameters, "--parameters")
    if run_async:
        try:
            submitted = conn.client.submit(
                model, version=number, label=label, token=token, **kwargs
            )
        except errors.Unauthenticated as exc:
            raise errors.Unauthenticated(
                f"{exc.message} With the CLI: --token TOKEN, or set MODELHOST_TOKEN."
            ) from None
        click.echo(submitted.id)
        click.echo(
            f"Queued. Get the result with: modelhost prediction {model} {submitted.id} --wait",
            err=True,
        )
        return
    try:
        prediction = conn.client.predict(model, version=number, label=label, token=token, **kwargs)
    except errors.Unauthenticated as exc:
        raise errors.Unauthenticated(
            f"{exc.message} With the CLI: --token TOKEN, or set MODELHOST_TOKEN."
        ) from None
    if full:
        print_json(
            {
                "result": prediction.result,
                "request_id": prediction.request_id,
                "timing": prediction.timing,
                "model_time_in_ms": prediction.model_time_in_ms,
                "release": prediction.release,
            }
        )
    else:
        print_json(prediction.result)


@click.command()
@click.argument("model")
@click.argument("prediction_id")
@click.option("--wait", is_flag=True, help="Wait until it has ended.")
@click.option(
    "--token",
    envvar="MODELHOST_TOKEN",
    help="The access token it was submitted with (else your API key is used).",
)
@click.option("--full", is_flag=True, help="Print the whole answer, not just the result.")
@pass_connection
def prediction(
    conn: Connection, model: str, prediction_id: str, wait: bool, token: str | None, full: bool
) -> None:
    """Show the asynchronous prediction PREDICTION_ID of MODEL: its result once it succeeded,
    its status while it waits or runs."""
    found = conn.client.result(prediction_id, model=model, wait=wait, token=token)
    if full:
        print_json(found.answer)
        return
    if found.status == "succeeded":
        print_json(found.result)
    elif found.status == "failed" and found.error is not None:
        raise errors.error_from_body(
            500, {"error": {"code": found.error.get("code"), "message": found.error.get("message")}}
        )
    else:
        click.echo(f"{found.status} (ask again, or add --wait)")


@click.command()
@click.argument("model")
@click.option(
    "--tail", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Lines to show."
)
@click.option("--version", "number", type=int, help="Only this version's instances.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option(
    "--requests",
    "requests_log",
    is_flag=True,
    help="The request log instead: a line per call (time, request id, version, route, "
    "status, duration, source).",
)
@pass_connection
def logs(
    conn: Connection,
    model: str,
    tail: int,
    number: int | None,
    follow: bool,
    requests_log: bool,
) -> None:
    """Print the instance logs of MODEL (with --requests, its request log)."""
    if requests_log:
        if number is not None or follow:
            raise click.UsageError("--requests takes --tail only, not --version or --follow.")
        for entry in conn.client.requests(model, tail=tail):
            click.echo(request_line(entry))
        return
    after: str | None = None
    try:
        while True:
            lines = conn.client.logs(
                model, tail=tail if after is None else 10_000, version=number, after=after
            )
            for line in lines:
                click.echo(f"{line['time']} v{line['version']} {line['instance']} {line['text']}")
            if not follow:
                return
            if lines:
                after = lines[-1]["time"]
            time.sleep(1)
    except KeyboardInterrupt:  # how --follow is stopped (its help says so): not a failure
        click.echo("", err=True)


def request_line(entry: dict[str, Any]) -> str:
    """A request log entry as the CLI prints it."""
    version = "-" if entry.get("version") is None else f"v{entry['version']}"
    duration = entry.get("duration_ms")
    return (
        f"{entry.get('time')} {entry.get('request_id')} {version} {entry.get('route') or '-'} "
        f"{entry.get('status')} {'-' if duration is None else f'{duration:.2f}ms'} "
        f"{entry.get('source') or '-'}"
    )


def _ms(value: float | None) -> str:
    """Three significant digits, never in scientific notation (3280, not 3.28e+03)."""
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


@click.command()
@click.argument("model")
@click.option(
    "--minutes",
    type=click.IntRange(1, 10080),
    default=60,
    show_default=True,
    help="How many recent minutes to sum up (up to 10080, a week).",
)
@format_option  # JSON has one point per minute
@pass_connection
def metrics(conn: Connection, model: str, minutes: int, as_json: bool) -> None:
    """Calls per minute, errors and latency of MODEL's versions, as the server recorded them."""
    found = conn.client.metrics(model, minutes=minutes)
    if as_json:
        print_json(found)
        return
    if not found["versions"]:
        click.echo(f"No calls to {found['model']} in the last {minutes} minutes.")
        return
    rows = []
    for version in found["versions"]:
        totals = version["totals"]
        rows.append(
            (
                version["version_number"],
                totals["requests"],
                totals["requests_per_minute"],
                totals["errors"],
                totals["client_errors"],
                f"{totals['error_rate']:.1%}",
                _ms(totals["p50_ms"]),
                _ms(totals["p99_ms"]),
            )
        )
    click.echo(f"Last {minutes} min of {found['model']}:")
    table(rows, ["VERSION", "CALLS", "PER MIN", "5XX", "4XX", "ERROR RATE", "P50 MS", "P99 MS"])


@click.command()
@click.argument("model")
@click.option("--version", "number", type=int, help="The document of this version's route.")
@click.option("--label", help="The document of this label's route, such as prod.")
@click.option(
    "--output",
    "-o",
    type=click.File("w", encoding="utf-8"),
    help="Write it to this file instead of standard output.",
)
@pass_connection
def openapi(
    conn: Connection,
    model: str,
    number: int | None,
    label: str | None,
    output: IO[str] | None,
) -> None:
    """Print MODEL's OpenAPI document: how to call it, typed from its function's signature.

    Feed it to a client generator or an API tool: modelhost openapi wine -o wine.json.
    """
    if number is not None and label is not None:
        raise click.UsageError("Give --version or --label, not both.")
    document = conn.client.openapi(model, label=label, version=number)
    if output is None:
        print_json(document)
        return
    output.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    click.echo(f"Wrote the OpenAPI document of {model} to {output.name}.")


COMMANDS = [publish, models, versions, call, prediction, logs, metrics, openapi]
