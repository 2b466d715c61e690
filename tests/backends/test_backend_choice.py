"""The backend setting: local by default with nothing of Ray imported, ray when asked for,
and a clear start-up error for a bad value or an unreachable cluster (docs/settings.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelhost import errors
from modelhost.settings import load_settings
from tests.helpers import PROJECTS, Server, free_port


def test_the_local_backend_is_the_default() -> None:
    assert load_settings(overrides={}, environ={}).backend == "local"


def test_a_backend_other_than_local_or_ray_is_refused_at_start_up() -> None:
    with pytest.raises(errors.InvalidSetting, match=r"'backend' .* expected local or ray"):
        load_settings(overrides={}, environ={"MODELHOST_BACKEND": "kubernetes"})


def test_a_negative_number_of_cpus_per_ray_instance_is_refused() -> None:
    with pytest.raises(errors.InvalidSetting, match="ray_instance_cpus"):
        load_settings(overrides={}, environ={"MODELHOST_RAY_INSTANCE_CPUS": "-1"})


def test_serving_with_the_local_backend_imports_nothing_of_ray(tmp_path: Path) -> None:
    # A fresh interpreter: this test process may have imported Ray for other tests.
    script = textwrap.dedent(
        f"""
        import sys
        import modelhost.app, modelhost.cli, modelhost.server
        from modelhost.app import create_app
        from modelhost.settings import load_settings
        home = {str(tmp_path / "home")!r}
        app = create_app(load_settings(overrides={{"home": home}}, environ={{}}))
        print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
        print(type(app.services.supervisor.backend).__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "LocalBackend"]


def test_a_ray_cluster_that_cannot_be_reached_stops_the_server_with_a_clear_error(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelhost", "serve"],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "MODELHOST_HOME": str(tmp_path / "home"),
            "MODELHOST_BACKEND": "ray",
            "MODELHOST_RAY_ADDRESS": "127.0.0.1:1",
            "MODELHOST_PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 1
    assert "Error: Cannot join the Ray cluster at ray_address = '127.0.0.1:1'" in result.stderr


def test_instances_on_the_local_backend_show_no_node_and_the_cli_says_local(
    server: Server,
) -> None:
    server.client().publish(PROJECTS / "calc" / "calc.py:add", name="local-node")
    (instance,) = server.client().instances("local-node")
    assert instance.node is None
    assert instance.pid is not None
    listed = server.cli("instances", "local-node", check=True).stdout.splitlines()
    assert listed[0].split() == ["INSTANCE", "VERSION", "STATE", "BUSY", "NODE", "PID", "CPUS"]
    # no hardware tier: no CPU limit
    assert listed[1].split() == [instance.id, "1", "ready", "no", "local", str(instance.pid), "-"]
