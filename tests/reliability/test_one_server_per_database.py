"""A second server pointed at the SQLite database of a running one refuses to start, with one
Error line naming the first, and the first keeps its run going (issue 15: it used to kill it).
Several servers share a PostgreSQL database instead (tests/reliability/test_several_servers.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECTS, free_port, running_server, wait_until

pytestmark = pytest.mark.integration


def test_a_second_server_on_the_same_sqlite_database_refuses_and_the_first_runs_on(
    tmp_path: Path,
) -> None:
    env = {"MODELHOST_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    with running_server(tmp_path / "first", env) as first:
        client = first.client()
        run = client.start_run(PROJECTS / "calc", ["sleep", "30"])
        wait_until(lambda: client.run(run["id"])["status"] == "running")

        second = subprocess.run(
            [sys.executable, "-m", "modelhost", "serve"],
            env={
                **first.env,
                "MODELHOST_HOME": str(tmp_path / "second"),
                "MODELHOST_PORT": str(free_port()),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert second.returncode != 0
        said = [line for line in second.stderr.splitlines() if line.startswith("Error:")]
        assert len(said) == 1, second.stderr
        assert "Another modelhost server uses this database" in said[0]
        assert "only one server may use a SQLite database" in said[0]
        assert first.url in said[0]
        assert f"pid {first.process.pid}" in said[0]  # type: ignore[union-attr]
        assert "Traceback" not in second.stderr
        assert client.run(run["id"])["status"] == "running"
        client.cancel_run(run["id"])

    # Stopped cleanly, the first lets the next server start at once, wherever it is.
    with running_server(tmp_path / "third", env) as third:
        assert third.process is not None
        assert third.process.poll() is None
