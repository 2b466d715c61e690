"""``modelhost captures``: export a model's captured calls, and drift reports of them."""

from __future__ import annotations

from pathlib import Path

import click

from modelhost.cli.connection import Connection, pass_connection
from modelhost.cli.output import format_option, print_json, table

#: how wide the text histograms are drawn, in characters
_BAR = 20


@click.group()
def captures() -> None:
    """Prediction capture: export captured calls, and drift reports of their inputs."""


@captures.command("export")
@click.argument("model")
@click.option(
    "--since",
    help="From when: a date or time (2026-12-01, 2026-12-01T09:30Z, UTC unless it says) or "
    "back from now (90m, 24h, 7d); default: everything kept.",
)
@click.option("--version", "number", type=int, help="Only this version's calls.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["parquet", "csv"]),
    default="parquet",
    show_default=True,
    help="File format.",
)
@click.option(
    "-o",
    "--output",
    "destination",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The file to write.",
)
@pass_connection
def export(
    conn: Connection,
    model: str,
    since: str | None,
    number: int | None,
    output: str,
    destination: Path,
) -> None:
    """Download MODEL's captured calls (time, request id, version, input, output)."""
    size = conn.client.export_captures(
        model, destination, since=since, version=number, format=output
    )
    click.echo(f"Wrote {destination} ({size} bytes, {output}).")


@captures.command("drift")
@click.argument("model")
@click.option("--version", "number", type=int, help="The version (default: newest captured).")
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A CSV (with a header row) or Parquet file of inputs to compare with.",
)
@click.option(
    "--first-day",
    is_flag=True,
    help="Compare with the version's first day of capture instead of a file.",
)
@format_option
@pass_connection
def drift(
    conn: Connection,
    model: str,
    number: int | None,
    reference: Path | None,
    first_day: bool,
    as_json: bool,
) -> None:
    """Compare a version's captured inputs with a reference: PSI and histograms per feature."""
    if (reference is None) == (not first_day):
        raise click.UsageError("Give one of --reference FILE or --first-day.")
    report = conn.client.drift(model, version=number, reference=reference)
    if as_json:
        print_json(report)
        return
    click.echo(
        f"{report['model']} version {report['version']}: {report['captured_rows']} captured "
        f"inputs against {report['reference']} ({report['reference_rows']} rows)"
    )
    rows = [
        [f["name"], f"{f['psi']:.4f}", "DRIFT" if f["drifted"] else "ok"]
        for f in report["features"]
    ]
    table(rows, ["FEATURE", "PSI", f"PSI > {report['threshold']:g}"])
    for feature in report["features"]:
        click.echo(f"\n{feature['name']}  (reference | captured, share per bin)")
        for part in feature["bins"]:
            low = "-inf" if part["low"] is None else f"{part['low']:.4g}"
            high = "inf" if part["high"] is None else f"{part['high']:.4g}"
            left = "#" * round(part["reference_share"] * _BAR)
            right = "#" * round(part["captured_share"] * _BAR)
            click.echo(f"  ({low}, {high}]".ljust(26) + f"{left:>{_BAR}} | {right}")
    for name, why in report["not_compared"].items():
        click.echo(f"not compared: {name} ({why})")


COMMANDS = [captures]
