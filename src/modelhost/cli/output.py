"""What the CLI prints: aligned tables and JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def print_json(value: Any) -> None:
    """``value`` as indented JSON, non-ASCII text kept readable."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=_as_json))


def _as_json(value: Any) -> Any:
    if isinstance(value, Mapping):  # the client's typed records
        return dict(value)
    raise TypeError(f"values of type '{type(value).__name__}' cannot be printed as JSON")
