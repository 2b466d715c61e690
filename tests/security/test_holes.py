"""Attacks replayed against a real ``modelhost serve``: each of them used to get through."""

from __future__ import annotations

import io
import os
import stat
import statistics
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelhost.ui import session
from tests.helpers import PROJECTS, Server, running_server

PASSWORD = "alice-long-password"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("holes") / "home") as running:
        running.client().add_user("alice", PASSWORD)
        yield running


def _headers(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"}


def _archive(*members: tuple[str, bytes | None]) -> bytes:
    """A .tar.gz of files (bytes) and directories (None), in this order, written as given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _publish(server: Server, archive: bytes, **params: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/models/holes/versions",
        params={"file": "calc.py", "function": "add", **params},
        content=archive,
        headers={**_headers(server), "Content-Type": "application/gzip"},
        timeout=60,
    )


CALC = (PROJECTS / "calc" / "calc.py").read_bytes()


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ([("a" * 300, b"x")], "longer than 255 bytes"),
        ([("a", b"x"), ("a/b", b"x")], "inside 'a'"),
        ([("d", None), ("d", b"x")], "also holds 'd' as a directory"),
        ([("./", b"x")], "named like the project directory"),
        ([("/".join(["d"] * 1500) + "/f", b"x")], "1501 directories deep"),
    ],
    ids=["300-character-name", "file-then-inside-it", "directory-then-file", "dot-slash", "deep"],
)
def test_a_malformed_archive_is_a_400_that_names_the_problem(
    server: Server, members: list[tuple[str, bytes | None]], fragment: str
) -> None:
    response = _publish(server, _archive(("calc.py", CALC), *members))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_bundle"
    assert fragment in response.json()["error"]["message"]


def test_a_git_source_with_a_token_is_recorded_without_it(server: Server) -> None:
    source = "git+https://ghp_SECRETTOKEN@git.example/o/r.git@main"
    published = _publish(server, _archive(("calc.py", CALC)), source=source)
    assert published.status_code == 201, published.text
    number = published.json()["version"]["number"]
    version = httpx.get(
        f"{server.url}/api/v1/models/holes/versions/{number}", headers=_headers(server)
    )
    assert "git+https://git.example/o/r.git@main" in version.text
    assert "ghp_SECRETTOKEN" not in version.text
    assert "ghp_SECRETTOKEN" not in server.log.read_text()


def test_signing_in_as_an_unknown_user_takes_as_long_as_a_wrong_password(server: Server) -> None:
    def median_time(username: str) -> float:
        times = []
        for _ in range(3):  # under the throttle's 5 per address and user name
            started = time.perf_counter()
            response = httpx.post(
                f"{server.url}/api/v1/login",
                json={"username": username, "password": "not the password"},
            )
            times.append(time.perf_counter() - started)
            assert response.status_code == 401, response.text
        return statistics.median(times)

    known, unknown = median_time("alice"), median_time("nobody-by-that-name")
    # An argon2 check takes tens of milliseconds; without one, an unknown user's answer would
    # come back in a small fraction of that. The ratio is generous for a loaded machine.
    assert unknown > known / 3, (known, unknown)


def test_a_foreign_host_header_is_refused_with_the_envelope(server: Server) -> None:
    for path in ("/api/v1/models", "/ui/sign-in", "/models/holes/latest/model"):
        response = httpx.get(f"{server.url}{path}", headers={"Host": "rebound.attacker.example"})
        assert response.status_code == 400, (path, response.text)
        assert "allowed_hosts" in response.json()["error"]["message"]


def test_a_cross_origin_ui_post_is_refused(server: Server) -> None:
    with httpx.Client(base_url=server.url) as browser:
        browser.get("/ui/sign-in")
        csrf = browser.cookies[session.CSRF_COOKIE]  # a valid token: only the origin is wrong
        response = browser.post(
            "/ui/sign-in",
            data={"username": "alice", "password": PASSWORD, "csrf_token": csrf},
            headers={"Origin": "https://attacker.example"},
        )
    assert response.status_code == 403, response.text
    assert "another site" in response.json()["error"]["message"]


def _private(path: Path) -> bool:
    return not stat.S_IMODE(path.stat().st_mode) & 0o077


def test_the_data_directory_and_its_database_are_not_readable_by_others(server: Server) -> None:
    assert _private(server.home)
    for name in ("modelhost.db", "server.key", "credentials", "bundles", "logs"):
        if (server.home / name).exists():
            assert _private(server.home / name), name
    assert (server.home / "modelhost.db").exists()


def test_an_existing_loose_data_directory_is_tightened_at_start_up(tmp_path: Path) -> None:
    home = tmp_path / "loose"
    with running_server(home):
        pass
    os.chmod(home, 0o755)
    for name in ("modelhost.db", "credentials", "server.key"):
        os.chmod(home / name, 0o644)
    (home / "logs").mkdir(exist_ok=True)
    os.chmod(home / "logs", 0o755)
    with running_server(home) as again:
        assert _private(home)
        for name in ("modelhost.db", "credentials", "server.key", "logs"):
            assert _private(home / name), name
        log = again.log.read_text()
    assert "Made the data directory" in log
    assert "modelhost.db" in log
