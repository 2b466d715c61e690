"""The CLI's error policy, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from modelhost.cli import cli
from tests.helpers import PROJECTS


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:9", "--api-key", "mh_x", *args])
    return result.exit_code, result.output


def test_misuse_exits_2_and_points_at_help() -> None:
    code, output = _run("publish", str(PROJECTS / "good"))
    assert code == 2
    assert "Missing option '--name'" in output
    code, output = _run("models", "update", "m")
    assert code == 2
    assert "Give at least one of" in output


def test_a_domain_error_is_one_error_line_and_exit_1() -> None:
    code, output = _run("publish", str(PROJECTS / "good"), "--name", "x")
    assert code == 1
    assert output.strip().splitlines() == [
        "Error: Say which function to publish: --file predict.py --function predict, or "
        "PATH/predict.py:predict."
    ]


def test_debug_shows_the_traceback_instead(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--debug", "--url", "http://127.0.0.1:9", "--api-key", "mh_x", "models", "list"]
    )
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "ConnectionFailed"


def test_help_lists_every_command() -> None:
    output = CliRunner().invoke(cli, ["--help"]).output
    for command in ("serve", "publish", "models", "versions", "call", "logs"):
        assert command in output


def test_nan_in_data_or_parameters_is_misuse_not_silently_null() -> None:
    code, output = _run("call", "m", "--parameters", "[1, NaN]")
    assert code == 2
    assert "NaN is not a JSON value; use null" in output
    code, output = _run("call", "m", "--data", '{"x": Infinity}')
    assert code == 2
    assert "Infinity is not a JSON value" in output


def test_a_tail_out_of_range_is_misuse() -> None:
    for tail in ("0", "-5", "100000"):
        code, output = _run("logs", "m", "--tail", tail)
        assert code == 2, output
        assert "Invalid value for '--tail'" in output


def test_json_nested_past_the_recursion_limit_is_misuse_not_a_traceback() -> None:
    code, output = _run("call", "m", "--parameters", "[" * 5000 + "]" * 5000)
    assert code == 2, output
    assert "nested too deeply" in output


def test_json_output_keeps_non_ascii_text_readable(capsys: pytest.CaptureFixture[str]) -> None:
    from modelhost.cli import commands

    commands._json({"result": "Café 東京"})
    assert '"result": "Café 東京"' in capsys.readouterr().out
