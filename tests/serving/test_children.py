"""The environment a child process (an instance or a run) starts with: of the server's own,
only what ``instance_env_passthrough`` names (docs/settings.md: "nothing else of the server's
environment reaches user code"); the sandbox adds only TMPDIR and HOME (tests/test_sandbox.py)."""

from __future__ import annotations

from pathlib import Path

from modelhost.crypto import ServerKey
from modelhost.serving.children import Children
from modelhost.settings import load_settings

SERVER_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin",
    "LANG": "C.UTF-8",
    "TZ": "Europe/Paris",
    "MODELHOST_HOME": "/var/lib/modelhost",
    "MODELHOST_DATABASE_URL": "postgresql+psycopg://modelhost:hunter2@db/modelhost",
    "MODELHOST_API_KEY": "mh_secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "PYTHONPATH": "/opt/server/site",
    "LD_PRELOAD": "/opt/server/hook.so",
}


def test_a_child_gets_only_the_passed_through_server_variables_and_its_own(
    tmp_path: Path,
) -> None:
    settings = load_settings({"home": str(tmp_path / "home")}, environ={})
    children = Children(settings, ServerKey(settings.home_path), environ=SERVER_ENVIRONMENT)
    home = tmp_path / "home" / "work" / "v-1"
    env = children.env(home=home, model=None, env_vars=[], ours={"MODELHOST_RUN_ID": "r-1"})
    assert {k: env[k] for k in ("PATH", "LANG", "TZ")} == {
        "PATH": "/usr/local/bin:/usr/bin",
        "LANG": "C.UTF-8",
        "TZ": "Europe/Paris",
    }
    for name in (
        "MODELHOST_HOME",
        "MODELHOST_DATABASE_URL",
        "MODELHOST_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "PYTHONPATH",
        "LD_PRELOAD",
    ):
        assert name not in env, name
    assert "hunter2" not in repr(env)
    assert env["HOME"] == str(home)
    assert env["MODELHOST_WORKING_DIR"] == str(home)
    assert env["MODELHOST_RUN_ID"] == "r-1"


def test_the_passthrough_list_is_a_setting(tmp_path: Path) -> None:
    settings = load_settings(
        {"home": str(tmp_path / "home"), "instance_env_passthrough": "TZ,AWS_SECRET_ACCESS_KEY"},
        environ={},
    )
    children = Children(settings, ServerKey(settings.home_path), environ=SERVER_ENVIRONMENT)
    env = children.env(home=tmp_path, model=None, env_vars=[])
    assert env["AWS_SECRET_ACCESS_KEY"] == "aws-secret"  # named, so it passes
    assert env["TZ"] == "Europe/Paris"
    assert "LANG" not in env
    assert "MODELHOST_DATABASE_URL" not in env
