"""What ``publish`` and ``versions`` print, against a client whose server is a fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from modelhost.cli import cli
from modelhost.client import Client
from tests.helpers import PROJECTS

CALL_HINT_KEYWORDS = '{"data": {...}} (keyword arguments) or {"parameters": [...]} (positional)'


def _version(**fields: Any) -> dict[str, Any]:
    version: dict[str, Any] = {
        "number": 1,
        "status": "running",
        "health": "ok",
        "file": "predict.py",
        "function": "predict",
        "entry_point": "predict.py:predict",
        "signature": "predict(features)",
        "environment": "server",
        "environment_revision": None,
        "python_version": "3.11.7",
        "packages": [],
        "concurrency": 1,
        "batch": None,
        "fork": True,
        "bundle_sha256": "ab" * 32,
        "author": "admin",
        "created_at": "2026-01-01T00:00:00Z",
        "description": "",
        "source": None,
        "git_commit": None,
        "health_log": "",
        "build_log": "Ready.\n",
    }
    version.update(fields)
    return version


class _FakeServer:
    """Answers a publish, the version it made and its model."""

    def __init__(self, version: dict[str, Any]) -> None:
        self.version = version
        self.model = {"name": "m", "state": "running", "invocation_mode": "public"}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/versions"):
            return httpx.Response(201, json={"model": self.model, "version": self.version})
        if request.url.path.startswith("/api/v1/models/m/versions/"):
            return httpx.Response(200, json=self.version)
        if request.url.path == "/api/v1/models/m":
            return httpx.Response(200, json=self.model)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeServer]:
    from modelhost.cli.connection import Connection

    fake = _FakeServer(_version())
    client = Client("http://server", "mh_key", transport=httpx.MockTransport(fake))
    monkeypatch.setattr(Connection, "client", property(lambda _self: client))
    yield fake
    client.close()


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _line(output: str, key: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(key + ":"))


def test_a_python_version_shows_whether_its_instances_are_forked(server: _FakeServer) -> None:
    assert _line(_run("versions", "m", "--number", "1"), "fork").split() == ["fork:", "yes"]
    server.version = _version(fork=False)
    shown = _line(_run("versions", "m", "--number", "1"), "fork")
    assert shown.endswith("no (each instance starts fresh)")


@pytest.mark.parametrize("script", ["predict.R", "model.r"])
def test_an_r_version_never_shows_fork_yes_since_r_instances_start_fresh(
    server: _FakeServer, script: str
) -> None:
    server.version = _version(
        file=script,
        function="predictQuality",
        entry_point=f"{script}:predictQuality",
        environment="r",
        python_version=None,
        fork=True,  # the default the API stores, whatever the language
    )
    shown = _line(_run("versions", "m", "--number", "1"), "fork")
    assert shown.split(None, 1)[1] == "no (R instances start fresh)"


def test_publishing_a_function_tells_how_to_call_it_with_its_arguments(
    server: _FakeServer,
) -> None:
    output = _run("publish", f"{PROJECTS / 'good'}/predict.py:predict", "--name", "m")
    assert "Version 1 of m is running: predict(features)" in output
    assert CALL_HINT_KEYWORDS in output
    assert "batch" not in output.lower()


def test_publishing_a_batching_function_gives_its_limits_and_how_a_call_reaches_it(
    server: _FakeServer,
) -> None:
    server.version = _version(
        function="predict_batch",
        entry_point="predict.py:predict_batch",
        signature="predict_batch(rows)",
        batch={"max_size": 64, "max_wait_ms": 5.0},
    )
    output = _run(
        "publish",
        f"{PROJECTS / 'good'}/predict.py:predict",
        "--name",
        "m",
        "--batch-max-size",
        "64",
    )
    assert (
        "It batches: at most 64 calls at once, waiting at most 5 ms for company while every "
        "instance is busy." in output
    )
    assert CALL_HINT_KEYWORDS not in output
    assert "keyword arguments" not in output
    hint = _line(output, "Call it")
    assert hint.startswith(
        'Call it: POST http://server/models/m/latest/model with a JSON body {"data": {...}} or '
        '{"parameters": [...]}, one input per call:'
    )
    assert "each call's data object or parameters array is one element of the list" in hint
    assert "predict_batch gets" in hint


def _help(*command: str) -> str:
    # the width --help has in an 80-column terminal (CliRunner forces 80 otherwise)
    result = CliRunner().invoke(cli, [*command, "--help"], prog_name="modelhost", terminal_width=78)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_fork_help_says_every_instance_is_forked_the_first_one_too() -> None:
    text = " ".join(_help("publish").split())
    assert "second and later" not in text
    assert (
        "Fork every instance, the first one too, from a process that imported the script once"
        in text
    )
