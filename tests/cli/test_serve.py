"""``modelhost serve`` refusing to start: one Error line that names the cause, no traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelhost.cli import cli


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    """serve sets this process's umask (0o077); the tests after these keep theirs."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


def _serve(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["serve", *args])
    assert not isinstance(result.exception, OSError), result.exception
    return result.exit_code, result.output


def test_a_data_directory_that_cannot_be_made_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    code, output = _serve("--home", str(tmp_path / "a-file" / "home"), "--port", "1")
    assert code == 1
    assert output.strip().splitlines() == [
        f"Error: Cannot use {tmp_path / 'a-file' / 'home'} as the data directory (Not a "
        "directory); give a directory this user can write to with --home or MODELHOST_HOME."
    ]


def test_an_address_this_machine_does_not_have_is_not_blamed_on_another_program(
    tmp_path: Path,
) -> None:
    open_before = len(os.listdir("/proc/self/fd"))
    code, output = _serve("--home", str(tmp_path / "home"), "--host", "192.0.2.1")
    assert len(os.listdir("/proc/self/fd")) == open_before  # the socket that failed is closed
    assert code == 1
    assert "another program" not in output
    assert "This machine has no address 192.0.2.1" in output
    assert "0.0.0.0" in output


def test_a_host_name_that_does_not_resolve_says_so(tmp_path: Path) -> None:
    code, output = _serve("--home", str(tmp_path / "home"), "--host", "no-such-host.invalid")
    assert code == 1
    assert "another program" not in output
    assert "Cannot find the address of no-such-host.invalid" in output
