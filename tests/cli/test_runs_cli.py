"""Misuse of ``run`` and ``schedules create`` is caught before anything is packed or sent."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from modelhost.cli import cli
from tests.helpers import PROJECTS

CALC = str(PROJECTS / "calc")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", CALC], "Missing argument 'COMMAND...'"),
        (["run", CALC, "python", "-c", "1"], "No such option '-c'"),
        (["run", CALC, "--publish-model", "m", "--", "python"], "needs --file and --function"),
        (["run", CALC, "--file", "calc.py", "--", "python"], "go with --publish-model"),
        (["schedules", "create", CALC, "--", "python"], "exactly one of --cron or --every"),
        (
            ["schedules", "create", CALC, "--cron", "* * * * *", "--every", "1h", "--", "x"],
            "exactly one of --cron or --every",
        ),
        (["schedules", "create", CALC, "--every", "1h", "--timezone", "UTC", "--", "x"], "--cron"),
        (["runs", "list", "--limit", "0"], "Invalid value for '--limit'"),
        (["runs", "list", "--limit", "-1"], "Invalid value for '--limit'"),
    ],
)
def test_misuse_of_runs_and_schedules_exits_2_with_the_fix(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:9", "--api-key", "mh_x", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_run_when_the_server_is_unreachable_is_one_error_line() -> None:
    result = CliRunner().invoke(
        cli, ["--url", "http://127.0.0.1:9", "--api-key", "mh_x", "run", CALC, "--", "python"]
    )
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "Cannot reach the modelhost server" in errors[0]
