"""The CLI's error policy, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from modelhost.cli import cli, lifecycle
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
    from modelhost.cli.output import print_json

    print_json({"result": "Café 東京"})
    assert '"result": "Café 東京"' in capsys.readouterr().out


class _RecordingClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, bool]] = []

    def set_env(self, model: str, name: str, value: str, *, secret: bool = False) -> None:
        self.calls.append((model, name, value, secret))


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> _RecordingClient:
    from modelhost.cli.connection import Connection

    client = _RecordingClient()
    monkeypatch.setattr(Connection, "client", property(lambda _self: client))
    return client


def test_a_secret_without_a_value_is_read_from_stdin_and_not_from_the_arguments(
    recording: _RecordingClient,
) -> None:
    result = CliRunner().invoke(
        cli, ["env", "set", "m", "API_TOKEN", "--secret"], input="s3cr3t=value\n"
    )
    assert result.exit_code == 0, result.output
    assert recording.calls == [("m", "API_TOKEN", "s3cr3t=value", True)]
    assert "s3cr3t" not in result.output


def test_a_value_given_on_the_command_line_is_still_taken(recording: _RecordingClient) -> None:
    result = CliRunner().invoke(cli, ["env", "set", "m", "URL=a=b"])
    assert result.exit_code == 0, result.output
    assert recording.calls == [("m", "URL", "a=b", False)]


def test_a_name_without_a_value_or_secret_is_misuse_that_says_what_to_write(
    recording: _RecordingClient,
) -> None:
    result = CliRunner().invoke(cli, ["env", "set", "m", "URL"])
    assert result.exit_code == 2
    assert "NAME=VALUE, or as NAME with --secret" in result.output
    assert recording.calls == []


@pytest.mark.parametrize(
    "args",
    [
        ["models", "update", "m", "--timeout", "nan"],
        ["models", "update", "m", "--timeout", "inf"],
        ["models", "update", "m", "--capture-share", "nan"],
        ["models", "update", "m", "--version", "1", "--batch-max-wait-ms", "nan"],
        ["publish", str(PROJECTS / "good"), "--name", "x", "--batch-max-wait-ms", "nan"],
        ["run", str(PROJECTS / "good"), "--timeout", "inf", "--", "python"],
    ],
)
def test_a_number_that_is_not_finite_is_misuse(args: list[str]) -> None:
    code, output = _run(*args)
    assert code == 2, output
    assert "is not a finite number" in output
    assert "Traceback" not in output


def test_a_capture_share_out_of_range_is_misuse() -> None:
    for share in ("0", "1.5", "-1"):
        code, output = _run("models", "update", "m", "--capture-share", share)
        assert code == 2, output
        assert "Invalid value for '--capture-share'" in output


def test_a_deploy_of_the_version_a_route_already_serves_says_nothing_changed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lifecycle._moved({"model": "m", "route": "latest", "from": 3, "to": 3})
    assert (
        capsys.readouterr().out == "m: route 'latest' already serves version 3; nothing changed.\n"
    )
    lifecycle._moved({"model": "m", "route": "latest", "from": 2, "to": 3})
    assert "moves from version 2 to version 3" in capsys.readouterr().out


def test_a_deploy_to_a_route_that_served_nothing_says_what_it_serves_now(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lifecycle._moved({"model": "m", "route": "label:prod", "from": None, "to": 1})
    assert capsys.readouterr().out == (
        "m: route 'label:prod' serves version 1 once its instances are ready.\n"
    )


def test_a_deploy_on_a_stopped_model_says_nothing_runs_until_it_is_started(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = {"model": "m", "route": "latest", "from": None, "to": 9, "model_state": "stopped"}
    lifecycle._moved(result)
    assert capsys.readouterr().out == (
        "m: route 'latest' serves version 9 once the model runs: it is stopped; 'modelhost "
        "start m' starts it.\n"
    )


def test_a_variable_without_a_name_is_misuse_saying_how_to_write_one() -> None:
    code, output = _run("env", "set", "m", "=1")
    assert code == 2
    assert "'=1' has no variable name: write NAME=VALUE" in output


def test_control_characters_in_a_value_show_as_escapes_in_tables_and_show_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from modelhost.cli.output import show_fields, table

    stored = "line one\nline two\x1b[31m red\ttab\x9b"
    table([("m", stored)], ["NAME", "DESCRIPTION"])
    show_fields({"description": stored}, ["description"])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "NAME  DESCRIPTION",
        "m     line one\\nline two\\x1b[31m red\\ttab\\x9b",
        "description:  line one\\nline two\\x1b[31m red\\ttab\\x9b",  # aligned as keys + 2
    ]


def test_a_batch_wait_without_a_batch_size_is_misuse_before_anything_is_packed() -> None:
    code, output = _run(
        "publish",
        f"{PROJECTS / 'good'}/predict.py:predict",
        "--name",
        "x",
        "--batch-max-wait-ms",
        "5",
    )
    assert code == 2, output
    assert "Error: --batch-max-wait-ms needs --batch-max-size: give both" in output
    assert output.count("Error:") == 1
    assert "Packing" not in output
    assert "Uploading" not in output


@pytest.mark.parametrize(
    ("value", "shown"),
    [(3284.0, "3284"), (120.4, "120"), (5.46, "5.46"), (0.25, "0.25"), (None, "-")],
)
def test_metrics_latencies_are_plain_numbers_never_scientific_notation(
    value: float | None, shown: str
) -> None:
    from modelhost.cli.models import _ms

    assert _ms(value) == shown
