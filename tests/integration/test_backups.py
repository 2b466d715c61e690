"""``modelhost backup`` taken while a real server serves calls, and ``modelhost restore`` into
a fresh data directory and database: the restored server serves the same versions to the
same tokens, has the same users, schedules and audit log, and decrypts the secrets; restored
without server.key, only the secrets are unreadable. On SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from modelhost import Client
from tests.conftest import _postgres_database
from tests.helpers import PROJECTS, running_server, wait_until

pytestmark = pytest.mark.integration

SECRET = "backed-up-secret-7731"


@pytest.fixture(params=["sqlite", "postgres"])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[dict[str, str]]]:
    """The environments of three servers' databases: the backed-up one and two to restore
    into (each fresh)."""
    if request.param == "sqlite":
        yield [{}, {}, {}]  # each data directory's own modelhost.db
        return
    urls = [_postgres_database() for _ in range(3)]
    try:
        yield [{"MODELHOST_DATABASE_URL": next(url)} for url in urls]
    finally:
        for url in urls:
            for _ in url:  # drops the database
                pass


def _modelhost(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelhost", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _call(url: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{url}/models/kept/latest/model",
        json={"data": {"env": "TOKEN"}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


class Load:
    """A thread calling the model non-stop while the backup runs."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.statuses.append(_call(self.url, self.token).status_code)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_backup_taken_under_load_restores_the_same_server_and_without_the_key_only_secrets_are_lost(  # noqa: E501
    tmp_path: Path, databases: list[dict[str, str]]
) -> None:
    original, restored_db, keyless_db = databases
    backup = tmp_path / "backup"
    with running_server(tmp_path / "original", original) as server:
        client = server.client()
        client.publish(PROJECTS / "versioned", file="model.py", function="which", name="kept")
        client.set_access("kept", invocation="token")
        client.set_env("kept", "TOKEN", SECRET, secret=True)
        token = client.create_token("kept", "partner")
        secret_token = str(token["token"])
        client.add_user("ana", "a-long-password-1")
        schedule = client.create_schedule(PROJECTS / "calc", ["python", "-c", "pass"], every="1h")
        wait_until(lambda: _call(server.url, secret_token).status_code == 200, timeout=60)
        wait_until(lambda: _call(server.url, secret_token).json()["result"]["env"] == SECRET)
        admin_key = server.api_key
        audit_before = [e["id"] for e in client.audit()]

        with Load(server.url, secret_token) as load:
            wait_until(lambda: len(load.statuses) >= 20, interval=0.01)
            made = _modelhost(server.env, "backup", str(backup))
            calls = len(load.statuses)
            wait_until(lambda: len(load.statuses) >= calls + 20, interval=0.01)
        assert made.returncode == 0, made.stderr
        assert set(load.statuses) == {200}  # served throughout
        assert "Backed up to" in made.stdout

    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["format"] == 1
    assert "server.key" in manifest["files"]
    bundles = [name for name in manifest["files"] if name.startswith("bundles/")]
    assert len(bundles) == 2  # the model's and the schedule's project
    for name, sha256 in manifest["files"].items():
        assert _sha256(backup / name) == sha256

    # A backup is never restored over a data directory in use, nor when damaged.
    refused = _modelhost(server.env, "restore", str(backup))
    assert refused.returncode == 1
    assert [line for line in refused.stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: The data directory {server.home} is in use (it has a server key or bundles); "
        "restore into a fresh one (setting home, or --home)."
    ]
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    first = damaged / bundles[0]
    first.write_bytes(first.read_bytes()[:-1] + b"x")
    fresh = {**server.env, **restored_db, "MODELHOST_HOME": str(tmp_path / "unused")}
    said = _modelhost(fresh, "restore", str(damaged))
    assert said.returncode == 1
    assert f"Error: {first} is damaged" in said.stderr
    assert "Traceback" not in said.stderr

    # Restored into a fresh data directory and database: the same server.
    env = {**restored_db, "MODELHOST_HOME": str(tmp_path / "restored")}
    restored = _modelhost({**server.env, **env}, "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    with running_server(tmp_path / "restored", restored_db) as again:
        answer = wait_until(
            lambda: (r := _call(again.url, secret_token)).status_code == 200 and r, timeout=60
        )
        assert answer.json()["result"]["env"] == SECRET  # the token works, the secret decrypts
        assert answer.headers["x-model-version"] == "1"
        with Client(again.url, admin_key) as on_again:
            assert {u["username"] for u in on_again.users()} >= {"ana"}
            assert on_again.schedule(schedule["id"])["id"] == schedule["id"]
            assert [t["name"] for t in on_again.tokens("kept")] == ["partner"]
            audit_after = [e["id"] for e in on_again.audit()]
            assert set(audit_before) <= set(audit_after)

    # Restored without server.key: everything but the secrets.
    keyless = tmp_path / "keyless"
    shutil.copytree(backup, keyless)
    (keyless / "server.key").unlink()
    env = {**keyless_db, "MODELHOST_HOME": str(tmp_path / "keyless-home")}
    restored = _modelhost({**server.env, **env}, "restore", str(keyless))
    assert restored.returncode == 0, restored.stderr
    assert "Warning: The backup has no server.key: secret variables cannot be decrypted" in (
        restored.stderr
    )
    with running_server(tmp_path / "keyless-home", keyless_db) as bare:
        with Client(bare.url, admin_key) as on_bare:
            assert {u["username"] for u in on_bare.users()} >= {"ana"}
            [version] = wait_until(
                lambda: [v for v in on_bare.versions("kept") if v["health"] == "unhealthy"],
                timeout=60,
            )
            assert "A secret cannot be decrypted" in version["health_log"]
        assert _call(bare.url, secret_token).status_code == 503
