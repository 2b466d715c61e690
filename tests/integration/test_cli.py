"""The CLI against a real server, using the credentials file the server wrote."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECTS, WINE_ROW, Server

pytestmark = pytest.mark.integration


def test_the_first_start_saves_the_admin_key_readable_only_by_its_owner(server: Server) -> None:
    credentials = server.home / "credentials"
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    saved = json.loads(credentials.read_text())
    assert saved["url"] == server.url
    assert saved["api_key"].startswith("mh_")
    log = server.log.read_text()
    assert saved["api_key"] in log  # printed once, on first start


def test_publish_call_list_versions_and_logs_from_the_command_line(
    server: Server, wine_project: Path
) -> None:
    published = server.cli(
        "publish",
        str(wine_project),
        "--file",
        "predict.py",
        "--function",
        "predict",
        "--name",
        "cli-wine",
        "--description",
        "from the CLI",
        check=True,
    )
    assert "Version 1 of cli-wine is running" in published.stdout

    called = server.cli("call", "cli-wine", "--parameters", json.dumps([WINE_ROW]), check=True)
    assert isinstance(json.loads(called.stdout), int)
    full = json.loads(
        server.cli(
            "call", "cli-wine", "--parameters", json.dumps([WINE_ROW]), "--full", check=True
        ).stdout
    )
    assert full["release"]["model_version_number"] == 1

    listed = server.cli("models", "list", check=True).stdout
    assert any(
        line.split()[:3][0] == "cli-wine" and "running" in line for line in listed.splitlines()
    )
    versions = server.cli("versions", "cli-wine", check=True).stdout
    assert "predict.py:predict" in versions
    assert "from the CLI" in versions
    shown = server.cli("versions", "cli-wine", "--number", "1", check=True).stdout
    assert "build log:" in shown
    assert "Ready." in shown
    logs = server.cli("logs", "cli-wine", check=True).stdout
    assert "ready in" in logs


def test_the_shorthand_path_script_function_publishes_too(server: Server) -> None:
    result = server.cli(
        "publish", f"{PROJECTS / 'calc'}/calc.py:add", "--name", "cli-short", check=True
    )
    assert "add(x, y)" in result.stdout
    called = server.cli("call", "cli-short", "--data", '{"x": 20, "y": 22}', check=True)
    assert json.loads(called.stdout) == 42


def test_publishing_by_model_id_reports_the_model_by_its_name(server: Server) -> None:
    target = f"{PROJECTS / 'calc'}/calc.py:add"
    server.cli("publish", target, "--name", "cli-by-id", check=True)
    model_id = server.client().model("cli-by-id")["id"]
    result = server.cli("publish", target, "--name", model_id, check=True)
    assert "Version 2 of cli-by-id is running: add(x, y)" in result.stdout
    assert "/models/cli-by-id/latest/model" in result.stdout
    assert model_id not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["call", "nobody", "--data", "{}"], "Error: There is no model 'nobody'"),
        (["versions", "nobody"], "Error: There is no model 'nobody'"),
        (
            [
                "publish",
                str(PROJECTS / "good"),
                "--file",
                "missing.py",
                "--function",
                "predict",
                "--name",
                "cli-missing",
            ],
            "Error: The file 'missing.py' is not in",
        ),
        (
            ["publish", "/no/such/dir", "--file", "p.py", "--function", "f", "--name", "x"],
            "Error: The project directory '/no/such/dir' does not exist.",
        ),
        (
            [
                "publish",
                str(PROJECTS / "missing_function"),
                "--file",
                "predict.py",
                "--function",
                "predict",
                "--name",
                "cli-broken",
            ],
            "Error: Version 1 of cli-broken failed to load",
        ),
        (
            [
                "publish",
                str(PROJECTS / "good"),
                "--file",
                "predict.py",
                "--function",
                "predict",
                "--name",
                "Bad Name",
            ],
            "Error: 'Bad Name' is not a valid model name",
        ),
        (["call", "cli-short", "--data", '{"x": 1}'], "Error: The arguments do not match"),
    ],
)
def test_user_mistakes_print_one_error_line_and_exit_1(
    server: Server, args: list[str], message: str
) -> None:
    if "cli-short" in args:
        server.cli("publish", f"{PROJECTS / 'calc'}/calc.py:add", "--name", "cli-short", check=True)
    result = server.cli(*args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_misuse_exits_2_with_usage_help(server: Server) -> None:
    result = server.cli("call", "cli-short")
    assert result.returncode == 2
    assert "Give exactly one of --data or --parameters" in result.stderr
    assert "Try 'modelhost call --help'" in result.stderr
    both = server.cli("call", "cli-short", "--parameters", "[]", "--version", "1", "--label", "l")
    assert both.returncode == 2
    assert "Give at most one of --version or --label" in both.stderr
    bad_json = server.cli("call", "cli-short", "--data", "{oops")
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr


def test_an_unreachable_server_is_one_error_line(server: Server, tmp_path: Path) -> None:
    result = server.cli("--url", "http://127.0.0.1:9", "--api-key", "mh_x", "models", "list")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: Cannot reach the modelhost server at")


def test_publishing_to_a_stopped_model_says_how_to_serve_it_not_where_to_call_it(
    server: Server,
) -> None:
    publish = ("publish", f"{PROJECTS / 'calc'}/calc.py:add", "--name", "cli-stopped")
    server.cli(*publish, check=True)
    server.cli("stop", "cli-stopped", check=True)
    result = server.cli(*publish, check=True)
    assert "Call it:" not in result.stdout
    assert "The model is stopped, so no call reaches it: 'modelhost start cli-stopped'" in (
        result.stdout
    )


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_following_the_logs_as_their_help_says_without_a_failure(
    server: Server,
) -> None:
    server.cli("publish", f"{PROJECTS / 'calc'}/calc.py:add", "--name", "cli-follow", check=True)
    env = {k: v for k, v in server.env.items() if k != "MODELHOST_PORT"}
    following = subprocess.Popen(
        [sys.executable, "-m", "modelhost", "logs", "cli-follow", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a suite started in the background inherits SIGINT ignored
        preexec_fn=_sigint_default,
    )
    try:
        assert following.stdout is not None
        assert following.stdout.readline()  # it prints the log's lines, then follows
        following.send_signal(signal.SIGINT)
        _, errors_out = following.communicate(timeout=30)
    finally:
        following.kill()
    assert following.returncode == 0
    assert "Aborted" not in errors_out
    assert "Traceback" not in errors_out


def test_delete_without_a_terminal_or_yes_is_one_error_line_and_deletes_nothing(
    server: Server,
) -> None:
    server.client().publish(PROJECTS / "calc", file="calc.py", function="add", name="keep-me")
    result = server.cli("delete", "keep-me", input="")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: No confirmation came: the input ended before the model's name. Pass --yes to "
        "delete without asking (in a script), or run it in a terminal; nothing was deleted."
    )
    assert "Aborted!" not in result.stderr + result.stdout
    assert server.client().model("keep-me")["name"] == "keep-me"
    # the name piped in confirms, as typed at the prompt would
    assert server.cli("delete", "keep-me", input="keep-me\n").returncode == 0


def test_a_secret_with_no_value_on_stdin_is_refused(server: Server) -> None:
    server.client().publish(PROJECTS / "calc", file="calc.py", function="add", name="no-secret")
    result = server.cli("env", "set", "no-secret", "S1", "--secret", input="")
    assert result.returncode == 1
    assert "Error: No value for S1 came on stdin; pipe it in" in result.stderr
    assert server.client().env("no-secret") == []
