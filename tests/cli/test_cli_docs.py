"""docs/cli.md shows each command's help as the command prints it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelhost.cli import cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _documented_helps() -> list[tuple[tuple[str, ...], str]]:
    """Each ``Usage: modelhost ...`` help in docs/cli.md, with the command it belongs to."""
    found = []
    for block in re.findall(r"```text\n(Usage: modelhost .*?)```", DOCS.read_text(), re.S):
        for text in re.split(r"\n(?=Usage: modelhost )", block):
            words = text.split("\n", 1)[0].split()[2:]
            found.append((tuple(words[: words.index("[OPTIONS]")]), text))
    return found


@pytest.mark.parametrize(
    ("command", "documented"),
    [pytest.param(c, text, id=" ".join(c) or "modelhost") for c, text in _documented_helps()],
)
def test_every_help_in_docs_cli_md_is_the_commands_own(
    command: tuple[str, ...], documented: str
) -> None:
    # the width --help has in an 80-column terminal (CliRunner forces 80 otherwise)
    shown = CliRunner().invoke(cli, [*command, "--help"], prog_name="modelhost", terminal_width=78)
    assert shown.exit_code == 0, shown.output
    assert documented == shown.output
