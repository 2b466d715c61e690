"""Servers of their own: restart, PostgreSQL, and tight limits."""

from __future__ import annotations

import io
import signal
import tarfile
from pathlib import Path

import httpx
import pytest

from modelhost import errors
from modelhost.db.engine import HEAD
from tests.helpers import PROJECTS, WINE_ROW, Server, running_server, wait_until

pytestmark = pytest.mark.integration


def test_a_restarted_server_brings_its_models_back_without_a_new_admin(
    tmp_path: Path, wine_project: Path
) -> None:
    home = tmp_path / "home"
    with running_server(home) as first:
        key = first.api_key
        first.client().publish(wine_project, file="predict.py", function="predict", name="wine")
        before = first.client().predict("wine", parameters=[WINE_ROW]).result
    with running_server(home) as second:
        assert second.api_key == key
        assert second.log.read_text().count("Created the admin account") == 1
        client = second.client()
        answer = client.predict("wine", parameters=[WINE_ROW])
        assert answer.result == before
        assert answer.version == 1
        assert [v["status"] for v in client.versions("wine")] == ["running"]


@pytest.mark.postgres
def test_the_server_runs_on_postgresql_with_the_same_behaviour(
    tmp_path: Path, postgres_url: str, wine_project: Path
) -> None:
    with running_server(tmp_path / "home", {"MODELHOST_DATABASE_URL": postgres_url}) as server:
        client = server.client()
        client.publish(wine_project, file="predict.py", function="predict", name="wine")
        client.publish(wine_project, file="predict.py", function="predict", name="wine")
        answer = client.predict("wine", parameters=[WINE_ROW])
        assert isinstance(answer.result, int)
        assert answer.version == 2
        assert not (server.home / "modelhost.db").exists()
        with pytest.raises(errors.BuildFailed):
            client.publish(
                PROJECTS / "syntax_error", file="predict.py", function="predict", name="wine"
            )
        wait_until(
            lambda: [v["status"] for v in client.versions("wine")] == ["ready", "running", "failed"]
        )


def _archive(*members: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return buffer.getvalue()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 1, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info


def test_limits_and_hostile_archives_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    env = {"MODELHOST_MAX_BUNDLE_BYTES": "200000", "MODELHOST_MAX_REQUEST_BYTES": "1000"}
    with running_server(tmp_path / "home", env) as server:
        client = server.client()
        project = tmp_path / "big"
        project.mkdir()
        (project / "predict.py").write_text("def predict(x):\n    return x\n")
        (project / "weights.bin").write_bytes(b"\0" * 150_000)
        (project / "more.bin").write_bytes(b"\1" * 90_000)
        with pytest.raises(errors.BundleTooLarge) as too_big:
            client.publish(project, file="predict.py", function="predict", name="big")
        assert "weights.bin (150.0 KB)" in too_big.value.message
        assert "more.bin (90.0 KB)" in too_big.value.message
        assert ".modelignore" in too_big.value.message
        with pytest.raises(errors.ModelNotFound):
            client.model("big")

        small = client.publish(
            project, file="predict.py", function="predict", name="big", exclude=["*.bin"]
        )
        assert small["bundle_files"] == 1

        headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/gzip"}
        url = f"{server.url}/api/v1/models/hostile/versions"
        params = {"file": "predict.py", "function": "predict"}
        hostile = {
            "absolute": (_archive(_member("/etc/cron.d/x")), "absolute path"),
            "dotdot": (_archive(_member("../../escape.py")), "outside the project"),
            "symlink": (_archive(_member("link", tarfile.SYMTYPE, link="/etc/passwd")), "link"),
            "hardlink": (_archive(_member("hard", tarfile.LNKTYPE, link="predict.py")), "link"),
            "device": (_archive(_member("dev", tarfile.CHRTYPE)), "device"),
            "fifo": (_archive(_member("pipe", tarfile.FIFOTYPE)), "device, pipe"),
            "garbage": (b"this is not a tarball", "not a readable .tar.gz"),
            "truncated": (
                _archive(_member("predict.py", size=5000), data=b"y" * 5000)[:60],
                "not a readable .tar.gz",
            ),
        }
        for name, (body, fragment) in hostile.items():
            response = httpx.post(url, params=params, content=body, headers=headers)
            assert response.status_code == 400, (name, response.text)
            assert response.json()["error"]["code"] == "invalid_bundle", name
            assert fragment in response.json()["error"]["message"], name
        assert not (tmp_path / "escape.py").exists()
        with pytest.raises(errors.ModelNotFound):
            client.model("hostile")
        assert not list((server.home / "tmp").iterdir())

        response = httpx.post(
            f"{server.url}/models/big/latest/model", json={"parameters": ["x" * 2000]}
        )
        assert response.status_code == 413
        assert "max_request_bytes" in response.json()["error"]["message"]


def test_a_new_servers_log_says_in_one_line_what_it_did_to_its_database(server: Server) -> None:
    logged = server.log.read_text()
    assert f": schema brought to revision {HEAD}" in logged
    assert "alembic.runtime.migration" not in logged  # not a line per migration applied


def test_a_second_server_on_the_same_data_directory_or_port_refuses_to_start(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    with running_server(tmp_path / "home") as server:
        env = {**server.env, "MODELHOST_PORT": str(server.port + 1)}
        same_home = subprocess.run(
            [sys.executable, "-m", "modelhost", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert same_home.returncode == 1
        assert "Another modelhost server" in same_home.stderr
        assert "is using the data directory" in same_home.stderr
        env = {
            **os.environ,
            "MODELHOST_HOME": str(tmp_path / "other"),
            "MODELHOST_PORT": str(server.port),
        }
        same_port = subprocess.run(
            [sys.executable, "-m", "modelhost", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert same_port.returncode == 1
        assert f"Cannot listen on 127.0.0.1:{server.port}" in same_port.stderr
        assert server.client().me()["username"] == "admin"
        saved = (server.home / "credentials").read_text()
        assert f":{server.port}" in saved  # the refused server changed nothing


def test_a_stopping_server_says_not_ready_on_health_while_it_still_answers(
    tmp_path: Path,
) -> None:
    env = {"MODELHOST_SHUTDOWN_DELAY_SECONDS": "120"}
    with running_server(tmp_path / "home", env) as server:
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 200
        assert health.json()["ready"] is True
        assert health.json()["leader"] is True
        server.client().publish(PROJECTS / "calc", file="calc.py", function="add", name="calc")
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{server.url}/health", timeout=10).status_code == 503)
        draining = httpx.get(f"{server.url}/health", timeout=10).json()
        assert draining["ready"] is False
        assert draining["status"] == "draining"
        # a load balancer takes it out now; what still reaches it is answered
        assert server.invoke("calc", {"data": {"x": 1, "y": 2}}).json()["result"] == 3
        assert server.process.poll() is None
        server.process.send_signal(signal.SIGTERM)  # a second stop does not wait out the delay
        server.process.wait(60)
        assert "Application shutdown complete" in server.log.read_text()
