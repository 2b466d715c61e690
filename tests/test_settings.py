"""Settings are data: one table, one precedence order, clear errors, all documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelhost import errors
from modelhost.cli import cli
from modelhost.settings import SETTINGS, load_settings, unknown_variables

DOCS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = load_settings(environ={"MODELHOST_HOME": str(tmp_path)})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.database_url == f"sqlite:///{tmp_path / 'modelhost.db'}"
    assert settings.max_bundle_bytes == 500_000_000
    assert settings.url == "http://127.0.0.1:8000"


def test_the_command_line_beats_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    (tmp_path / "modelhost.toml").write_text("port = 7000\ntimeout_seconds = 5\nhost = '0.0.0.0'\n")
    environ = {
        "MODELHOST_HOME": str(tmp_path),
        "MODELHOST_PORT": "7100",
        "MODELHOST_TIMEOUT_SECONDS": "9",
    }
    settings = load_settings({"port": 7200}, environ=environ)
    assert settings.port == 7200
    assert settings.timeout_seconds == 9.0
    assert settings.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"MODELHOST_PORT": "eighty"}, "Setting 'port' from $MODELHOST_PORT has the invalid value"),
        ({"MODELHOST_PORT": "70000"}, "between 1 and 65535"),
        ({"MODELHOST_PORT": "abc"}, "'abc': expected a whole number"),
        ({"MODELHOST_TIMEOUT_SECONDS": "soon"}, "expected a number"),
        ({"MODELHOST_TIMEOUT_SECONDS": "-1"}, "'timeout_seconds'"),
        ({"MODELHOST_LOG_LEVEL": "loud"}, "one of debug, info"),
        ({"MODELHOST_DEFAULT_INSTANCE_COUNT": "9"}, "larger than 'max_instance_count'"),
        ({"MODELHOST_INSTANCE_BUSY_POLL_MICROSECONDS": "-5"}, "expected a whole number of at"),
        (
            {"MODELHOST_INSTANCE_BUSY_POLL_MICROSECONDS": "250000"},
            "from 0 (never poll) to 100000 (a tenth of a second)",
        ),
    ],
)
def test_a_bad_value_fails_at_start_naming_the_setting_and_value(
    tmp_path: Path, environ: dict[str, str], fragment: str
) -> None:
    with pytest.raises(errors.InvalidSetting, match=re.escape(fragment)):
        load_settings(environ={"MODELHOST_HOME": str(tmp_path), **environ})


def test_unknown_keys_in_the_settings_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "modelhost.toml").write_text("prot = 1\n")
    with pytest.raises(errors.InvalidSetting, match=r"Unknown setting.*prot"):
        load_settings(environ={"MODELHOST_HOME": str(tmp_path)})


def test_a_settings_file_that_is_not_utf8_is_refused_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "modelhost.toml").write_bytes(b"\xff\xfeport = 1\n")
    with pytest.raises(errors.InvalidSetting, match=r"Cannot read settings file .*modelhost\.toml"):
        load_settings(environ={"MODELHOST_HOME": str(tmp_path)})


def test_secret_settings_are_masked_in_repr(tmp_path: Path) -> None:
    url = "postgresql+psycopg://user:s3cret@db/modelhost"
    settings = load_settings(
        environ={"MODELHOST_HOME": str(tmp_path), "MODELHOST_DATABASE_URL": url}
    )
    assert settings.database_url == url
    assert "s3cret" not in repr(settings)


def test_every_setting_is_documented_and_listed_by_help_settings() -> None:
    documented = DOCS.read_text()
    listed = CliRunner().invoke(cli, ["serve", "--help-settings"])
    assert listed.exit_code == 0, listed.output
    for setting in SETTINGS:
        assert f"`{setting.name}`" in documented, setting.name
        assert setting.env_var in documented, setting.env_var
        assert setting.env_var in listed.output


def test_unknown_modelhost_variables_are_reported_as_likely_typos() -> None:
    environ = {"MODELHOST_PROT": "1", "MODELHOST_PORT": "1", "MODELHOST_URL": "x", "HOME": "/"}
    assert unknown_variables(environ) == ["MODELHOST_PROT"]
