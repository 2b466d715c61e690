"""The worker's fork-server mode, as a real process: it imports the script once, forks an
instance for each request with the connection and log it is handed, and reports each fork's
pid and exit; a script that fails to import is reported once, as LOAD_FAILED."""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhost.backends.local import WORKER
from modelhost.runtime import protocol
from modelhost.serving.children import THREAD_CAPS
from tests.helpers import PROJECTS


class ForkServer:
    def __init__(
        self, project: str, file: str, function: str, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control.settimeout(30)
        spec = {"workdir": str(PROJECTS / project), "file": file, "function": function}
        argv = [sys.executable, "-u", str(WORKER), "--fork-server-fd", str(theirs.fileno())]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*argv, "--spec", json.dumps(spec)],
                pass_fds=(theirs.fileno(),),
                stdout=out,
                stderr=out,
                cwd=PROJECTS / project,
                env=None if env is None else {**os.environ, **env},
            )
        theirs.close()

    def receive(self) -> dict[str, Any]:
        return dict(json.loads(self.control.recv(1 << 20)))

    def fork(
        self, instance: str, log: Path, env: dict[str, str] | None = None
    ) -> tuple[socket.socket, int]:
        ours, theirs = socket.socketpair()
        ours.settimeout(30)
        log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fds = array.array("i", [theirs.fileno(), log_fd])
        env = {"MODELHOST_INSTANCE_ID": instance, **(env or {})}
        message = json.dumps({"fork": instance, "env": env})
        self.control.sendmsg([message.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        theirs.close()
        os.close(log_fd)
        answer = self.receive()
        assert answer["forked"] == instance
        return ours, int(answer["pid"])


@pytest.fixture
def fork_server(tmp_path: Path) -> Iterator[ForkServer]:
    server = ForkServer("shared", "shared.py", "whoami", tmp_path / "server.log")
    yield server
    server.control.close()
    server.process.kill()
    server.process.wait(30)


def _frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    decoder = protocol.FrameDecoder()
    while True:
        data = sock.recv(1 << 16)
        assert data, "the connection closed"
        yield from decoder.feed(data)


def _call(sock: socket.socket) -> dict[str, Any]:
    sock.sendall(protocol.encode_call("REQUEST000000001", b'{"data": {}}'))
    for kind, payload in _frames(sock):
        assert kind == protocol.RESULT
        return dict(json.loads(protocol.decode_result(payload)[2]))
    raise AssertionError("no answer")


def test_forked_instances_share_one_import_and_each_has_its_own_log_and_environment(
    fork_server: ForkServer, tmp_path: Path
) -> None:
    assert fork_server.receive()["ready"]["threads"] == 1
    answers = []
    for name in ("first", "second"):
        sock, pid = fork_server.fork(name, tmp_path / f"{name}.log")
        kind, payload = next(_frames(sock))
        assert kind == protocol.READY
        assert json.loads(payload)["pid"] == pid
        answers.append(_call(sock))
        sock.sendall(protocol.encode(protocol.SHUTDOWN))
        assert fork_server.receive() == {"exited": pid, "code": 0}
        sock.close()
        assert f"instance {name} (pid {pid}) forked" in (tmp_path / f"{name}.log").read_text()
    assert answers[0]["token"] == answers[1]["token"]
    assert [a["instance"] for a in answers] == ["first", "second"]
    assert "fork server" in (tmp_path / "server.log").read_text()


def test_a_script_importing_pyarrow_counts_as_one_thread_and_its_forks_allocate_with_it(
    tmp_path: Path,
) -> None:
    # BLAS and OpenMP capped at one thread each, as the server starts every instance
    caps = {name: "1" for name in THREAD_CAPS}
    server = ForkServer("arrow", "arrow_model.py", "whoami", tmp_path / "server.log", caps)
    try:
        ready = server.receive()["ready"]
        # jemalloc's background thread runs beside the fork server's own, and is not counted
        tasks = Path(f"/proc/{server.process.pid}/task").iterdir()
        names = sorted((task / "comm").read_text().strip() for task in tasks)
        assert len(names) == 2
        assert "jemalloc_bg_thd" in names
        assert ready["threads"] == 1
        sock, pid = server.fork("first", tmp_path / "first.log")
        assert next(_frames(sock))[0] == protocol.READY
        # ... and an instance forked from it computes with arrays it allocates itself
        sock.sendall(protocol.encode_call("REQUEST000000001", b'{"data": {"n": 1000}}'))
        kind, payload = next(_frames(sock))
        assert kind == protocol.RESULT
        result = json.loads(protocol.decode_result(payload)[2])
        assert result["sum"] == 999 * 1000 // 2 + 99_999 * 100_000 // 2
        assert result["pid"] == pid
        sock.close()
    finally:
        server.control.close()
        server.process.kill()
        server.process.wait(30)


def test_a_forked_instance_the_server_asks_to_kill_is_reported_killed(
    fork_server: ForkServer, tmp_path: Path
) -> None:
    fork_server.receive()
    sock, pid = fork_server.fork("doomed", tmp_path / "doomed.log")
    fork_server.control.send(json.dumps({"kill": pid}).encode())
    assert fork_server.receive() == {"exited": pid, "code": -signal.SIGKILL}
    sock.close()


def test_a_variable_with_a_nul_character_fails_the_instance_load_naming_it_without_a_traceback(
    fork_server: ForkServer, tmp_path: Path
) -> None:
    fork_server.receive()
    env = {"MODELHOST_MODEL_NAME": "m", "BROKEN": "a\x00b"}
    sock, pid = fork_server.fork("nul", tmp_path / "nul.log", env)
    kind, payload = next(_frames(sock))
    assert kind == protocol.LOAD_FAILED
    message = json.loads(payload)["message"]
    assert "The environment variable BROKEN cannot be set" in message
    assert "'modelhost env unset m BROKEN'" in message
    assert fork_server.receive() == {"exited": pid, "code": 1}
    sock.close()
    log = (tmp_path / "nul.log").read_text()
    assert "The environment variable BROKEN cannot be set" in log
    assert "Traceback" not in log
    # the fork server itself goes on forking
    sock, pid = fork_server.fork("next", tmp_path / "next.log")
    assert next(_frames(sock))[0] == protocol.READY
    sock.close()


def test_a_script_that_fails_to_import_is_reported_once_and_the_fork_server_exits(
    tmp_path: Path,
) -> None:
    server = ForkServer("import_error", "predict.py", "predict", tmp_path / "server.log")
    answer = server.receive()
    server.control.close()
    assert "Importing 'predict.py' raised" in answer["load_failed"]["message"]
    assert "Traceback" in answer["load_failed"]["traceback"]
    assert server.process.wait(30) == 1


def test_closing_the_control_socket_stops_the_fork_server(fork_server: ForkServer) -> None:
    fork_server.receive()
    fork_server.control.close()
    assert fork_server.process.wait(30) == 0
