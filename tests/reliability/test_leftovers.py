"""A server started on a data directory that a crash left staging files in removes them and
keeps serving what was published (issue 15: staging leftovers were never removed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import PROJECTS, Server, wait_until

pytestmark = pytest.mark.integration


def test_a_restart_removes_what_interrupted_publishes_and_builds_left_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    server = Server(home).start()
    try:
        server.client().publish(PROJECTS / "calc", name="calc", file="calc.py", function="add")
    finally:
        server.stop()
    leftovers = [
        home / "tmp" / "publish-crashed",
        home / "work" / ".v-crashed",
        home / "envs" / ".tmp" / "k-1",
    ]
    for folder in leftovers:
        folder.mkdir(parents=True)
        (folder / "big.bin").write_bytes(b"0" * 1024)
    partial = home / "bundles" / ".staging-crashed.tar"
    partial.write_bytes(b"half a tar")

    server = Server(home).start()
    try:
        assert not any(p.exists() for p in [*leftovers, partial])
        wait_until(lambda: server.invoke("calc", {"data": {"x": 1, "y": 2}}).status_code == 200)
        assert server.invoke("calc", {"data": {"x": 1, "y": 2}}).json()["result"] == 3
        assert "leftover" in server.log.read_text()
    finally:
        server.stop()
