"""What the CLI prints: aligned tables and JSON."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

#: control characters (C0, DEL and C1) as escapes: a value with a line break, or a terminal
#: escape sequence someone stored in a description, must not break a table or drive the terminal
_ESCAPES = {
    code: ("\\n" if code == 10 else "\\t" if code == 9 else f"\\x{code:02x}")
    for code in (*range(0x20), *range(0x7F, 0xA0))
}


def cell(value: Any) -> str:
    """``value`` as one line of a table (None as nothing)."""
    return "" if value is None else str(value).translate(_ESCAPES)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [[cell(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(text.ljust(w) for text, w in zip(row, widths, strict=True)).rstrip())


def print_json(value: Any) -> None:
    """``value`` as indented JSON, non-ASCII text kept readable."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=_as_json))


def _as_json(value: Any) -> Any:
    if isinstance(value, Mapping):  # the client's typed records
        return dict(value)
    raise TypeError(f"values of type '{type(value).__name__}' cannot be printed as JSON")


def format_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--format text|json`` (text by default) on a show or list command, which then gets
    ``as_json``; ``--json`` stays as a hidden short form of ``--format json``."""

    @functools.wraps(command)
    def wrapper(*args: Any, output_format: str, json_flag: bool, **kwargs: Any) -> Any:
        return command(*args, as_json=json_flag or output_format == "json", **kwargs)

    wrapper = click.option("--json", "json_flag", is_flag=True, hidden=True)(wrapper)
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Print text for people, or JSON for programs.",
    )(wrapper)


def show_fields(value: Mapping[str, Any], keys: Sequence[str]) -> None:
    """``key: value`` lines, aligned, for a show command's text."""
    width = max(len(key) for key in keys) + 2
    for key in keys:
        field = value.get(key)
        if isinstance(field, (list, tuple)):
            field = ", ".join(str(item) for item in field)
        elif isinstance(field, Mapping):
            field = json.dumps(dict(field), ensure_ascii=False, sort_keys=True)
        elif isinstance(field, bool):
            field = "yes" if field else "no"
        click.echo(f"{key + ':':{width}} {cell(field)}".rstrip())
