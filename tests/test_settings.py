"""Settings are data: one table, one precedence order, clear errors, all documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelhost import errors
from modelhost.cli import cli
from modelhost.settings import SETTINGS, Setting, load_settings, unknown_variables

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


def test_help_settings_shows_a_boolean_default_as_the_settings_file_spells_it() -> None:
    listed = CliRunner().invoke(cli, ["serve", "--help-settings"]).output
    assert "request_log  [MODELHOST_REQUEST_LOG]  default: true\n" in listed
    assert "default: True" not in listed
    assert "default: False" not in listed


def test_unknown_modelhost_variables_are_reported_as_likely_typos() -> None:
    environ = {"MODELHOST_PROT": "1", "MODELHOST_PORT": "1", "MODELHOST_URL": "x", "HOME": "/"}
    assert unknown_variables(environ) == ["MODELHOST_PROT"]


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("instance_busy_poll_microseconds = 500.5", "500.5: expected a whole number."),
        ("instance_busy_poll_microseconds = true", "true: expected a whole number."),
        ("instance_busy_poll_microseconds = 500.0", "500.0: expected a whole number"),
        ("port = 8000.0", "8000.0: expected a whole number"),
        ("max_concurrent_runs = false", "false: expected a whole number."),
        ("request_log_backups = 2.5", "2.5: expected a whole number."),
    ],
)
def test_an_integer_setting_in_the_file_refuses_fractions_and_booleans_as_the_environment_does(
    tmp_path: Path, line: str, shown: str
) -> None:
    (tmp_path / "modelhost.toml").write_text(line + "\n")
    with pytest.raises(errors.InvalidSetting) as raised:
        load_settings(environ={"MODELHOST_HOME": str(tmp_path)})
    name = line.split(" = ")[0]
    assert raised.value.message.startswith(
        f"Setting '{name}' from modelhost.toml has the invalid value {shown}"
    )


@pytest.mark.parametrize("value", ["1.5", "500.0", "true"])
def test_an_integer_setting_in_the_environment_refuses_fractions_and_words(
    tmp_path: Path, value: str
) -> None:
    environ = {"MODELHOST_HOME": str(tmp_path), "MODELHOST_INSTANCE_BUSY_POLL_MICROSECONDS": value}
    with pytest.raises(errors.InvalidSetting, match="expected a whole number"):
        load_settings(environ=environ)


def test_a_whole_number_written_with_a_decimal_point_is_told_how_to_write_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "modelhost.toml").write_text("instance_busy_poll_microseconds = 500.0\n")
    with pytest.raises(errors.InvalidSetting, match=re.escape("write 500")):
        load_settings(environ={"MODELHOST_HOME": str(tmp_path)})
    environ = {"MODELHOST_HOME": str(tmp_path), "MODELHOST_PORT": "8000.0"}
    with pytest.raises(errors.InvalidSetting, match=re.escape("write 8000")):
        load_settings(environ=environ)


def test_integer_settings_still_take_toml_integers_and_text(tmp_path: Path) -> None:
    (tmp_path / "modelhost.toml").write_text(
        "instance_busy_poll_microseconds = 250\nport = '8100'\nmax_concurrent_runs = 1_000\n"
    )
    settings = load_settings(environ={"MODELHOST_HOME": str(tmp_path)})
    assert settings.instance_busy_poll_microseconds == 250
    assert settings.port == 8100
    assert settings.max_concurrent_runs == 1000


@pytest.mark.parametrize(
    "line",
    [
        "timeout_seconds = true",
        "shutdown_delay_seconds = false",
        "rollback_error_rate = true",
        "ray_instance_cpus = true",
        "timeout_seconds = inf",
        "ray_instance_cpus = nan",
    ],
)
def test_a_number_setting_in_the_file_refuses_booleans_and_values_that_are_not_finite(
    tmp_path: Path, line: str
) -> None:
    (tmp_path / "modelhost.toml").write_text(line + "\n")
    with pytest.raises(errors.InvalidSetting, match="expected a"):
        load_settings(environ={"MODELHOST_HOME": str(tmp_path)})


def test_number_settings_take_toml_integers_and_floats(tmp_path: Path) -> None:
    (tmp_path / "modelhost.toml").write_text("timeout_seconds = 30\nrollback_error_rate = 0.25\n")
    settings = load_settings(environ={"MODELHOST_HOME": str(tmp_path)})
    assert settings.timeout_seconds == 30.0
    assert settings.rollback_error_rate == 0.25


def _help_entries() -> dict[str, str]:
    """Each setting's entry in ``modelhost serve --help-settings``: its line with the default
    (and range), then its help."""
    listed = CliRunner().invoke(cli, ["serve", "--help-settings"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    return {
        head.split("  [")[0]: f"{head}\n{text}"
        for head, text in zip(lines[::2], lines[1::2], strict=True)
    }


#: the ranges docs/settings.md gives, in the words --help-settings shows them
DOCUMENTED_RANGES = {
    "port": ["range: 1 to 65535"],
    "instance_busy_poll_microseconds": ["range: 0 to 100000", "0 never polls"],
    "ray_instance_cpus": ["range: at least 0", "fractions allowed, 0 for none"],
    "shutdown_delay_seconds": ["range: at least 0", "0 stops taking connections"],
    "switch_hold_seconds": ["range: at least 0", "0 stops the old one"],
    "instance_memory_limit_mb": ["range: at least 0", "0 for no limit"],
    "request_log_backups": ["range: at least 0"],
    "rollback_error_rate": ["range: above 0, at most 1", "1 turns the watch off"],
    "async_timeout_seconds": ["range: above 0, at most 3600"],
    "async_instance_share": ["range: above 0, at most 1"],
    "sandbox_first_uid": ["range: 1000 to 4293918718"],
    "default_instance_count": ["range: at least 1", "not more than max_instance_count"],
    "metrics_token": ["at least 16 characters and no spaces"],
    "hardware_tiers": [
        "cpus (a finite number above 0, fractions allowed)",
        "memory_mb (a whole number, at least 1)",
        "gpus (a whole number, at least 0)",
    ],
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED_RANGES))
def test_help_settings_gives_each_range_docs_settings_md_gives(name: str) -> None:
    entry = _help_entries()[name]
    for words in DOCUMENTED_RANGES[name]:
        assert words in entry, (name, words)


def test_every_number_setting_shows_its_range_at_least_1_or_above_0_unless_documented() -> None:
    # docs/settings.md: a whole-number setting is at least 1, any other number setting above
    # 0, unless its row gives another range
    entries = _help_entries()
    for setting in SETTINGS:
        default = setting.default
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            assert "range:" not in entries[setting.name].splitlines()[0], setting.name
            continue
        shown = entries[setting.name].splitlines()[0].split("  range: ")[1]
        if setting.name not in DOCUMENTED_RANGES:
            assert shown == ("at least 1" if isinstance(default, int) else "above 0"), setting.name


def _bounds(shown: str, whole: bool) -> tuple[list[object], list[object]]:
    """Values a range as --help-settings shows it (``1 to 65535``, ``at least 0``, ``above 0,
    at most 1``) takes, and values just outside it that it refuses."""
    step: float = 1 if whole else 0.001
    accepted: list[object] = []
    refused: list[object] = []
    for part in shown.split(", "):
        words = part.split()
        if " to " in part:
            low, high = int(words[0]), int(words[2])
            accepted += [low, high]
            refused += [low - 1, high + 1]
        elif part.startswith("at least "):
            accepted.append(float(words[2]) if not whole else int(words[2]))
            refused.append(float(words[2]) - step)
        elif part.startswith("above "):
            accepted.append(float(words[1]) + step)
            refused.append(float(words[1]))
        elif part.startswith("at most "):
            accepted.append(float(words[2]))
            refused.append(float(words[2]) + step)
        else:
            raise AssertionError(
                f"a range --help-settings shows that this test cannot read: {part}"
            )
    return accepted, refused


@pytest.mark.parametrize(
    "setting",
    [
        s
        for s in SETTINGS
        if isinstance(s.default, (int, float)) and not isinstance(s.default, bool)
    ],
    ids=lambda s: s.name,
)
def test_the_range_help_settings_shows_is_the_one_the_server_checks(
    tmp_path: Path, setting: Setting
) -> None:
    shown = _help_entries()[setting.name].splitlines()[0].split("  range: ")[1]
    whole = isinstance(setting.default, int)
    accepted, refused = _bounds(shown, whole)
    for value in accepted:
        environ = {"MODELHOST_HOME": str(tmp_path), setting.env_var: str(value)}
        if setting.name == "default_instance_count":  # not more than max_instance_count
            environ["MODELHOST_MAX_INSTANCE_COUNT"] = str(value)
        assert getattr(load_settings(environ=environ), setting.name) == value, value
    for value in refused:
        environ = {"MODELHOST_HOME": str(tmp_path), setting.env_var: str(value)}
        with pytest.raises(errors.InvalidSetting, match=setting.name):
            load_settings(environ=environ)
