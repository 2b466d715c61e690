"""A worker shared by several servers (``--more-fd``, as an actor on a Ray node starts it): a
real worker process, its first connection and a second one handed over the way the actor
hands it (one descriptor a message, SCM_RIGHTS).

The expected behaviour is docs/scaling.md, "Several servers with the Ray backend": each
server's connection gets READY, calls from both are answered on their own connection, a server
that goes away does not end the instance, and the instance ends once a server said SHUTDOWN
and no connection is left.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from modelhost.runtime import protocol, worker
from tests.helpers import PROJECTS


class Peer:
    """One server's end of a connection to the worker."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(30)
        self.decoder = protocol.FrameDecoder()
        self.frames: list[tuple[int, bytes]] = []

    def next_frame(self) -> tuple[int, bytes]:
        while not self.frames:
            data = self.sock.recv(1 << 16)
            assert data, "the worker closed the connection"
            self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    def add(self, request_id: str, x: int, y: int) -> int:
        self.sock.sendall(
            protocol.encode_call(request_id, json.dumps({"data": {"x": x, "y": y}}).encode())
        )
        kind, payload = self.next_frame()
        assert kind == protocol.RESULT, payload
        answered_id, _, result = protocol.decode_result(payload)
        assert answered_id == request_id
        return int(json.loads(result))


#: the connections handed over in a test, closed after it
HANDED: list[socket.socket] = []


@pytest.fixture(params=[1, 2], ids=["one-at-a-time", "concurrency-2"])
def shared_worker(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[subprocess.Popen[bytes], Peer, socket.socket]]:
    """The worker, with the version's concurrency 1 (calls one at a time, whichever server
    sent them) and 2 (on a pool of threads)."""
    first, first_theirs = socket.socketpair()
    more, more_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    spec = {
        "workdir": str(PROJECTS / "calc"),
        "file": "calc.py",
        "function": "add",
        "concurrency": request.param,
    }
    process = subprocess.Popen(
        [
            *(sys.executable, worker.__file__, "--fd", str(first_theirs.fileno())),
            *("--more-fd", str(more_theirs.fileno()), "--spec", json.dumps(spec)),
        ],
        pass_fds=(first_theirs.fileno(), more_theirs.fileno()),
        stdout=subprocess.DEVNULL,
    )
    first_theirs.close()
    more_theirs.close()
    try:
        yield process, Peer(first), more
    finally:
        process.kill()
        process.wait()
        for sock in [first, more, *HANDED]:
            sock.close()
        HANDED.clear()


def hand_over(more: socket.socket) -> Peer:
    """A second server's connection, handed to the worker as the actor does."""
    ours, theirs = socket.socketpair()
    socket.send_fds(more, [b'{"connection": 1}'], [theirs.fileno()])
    theirs.close()
    HANDED.append(ours)
    return Peer(ours)


def test_every_servers_connection_gets_ready_and_the_answers_to_its_own_calls(
    shared_worker: tuple[subprocess.Popen[bytes], Peer, socket.socket],
) -> None:
    _process, first, more = shared_worker
    assert first.next_frame()[0] == protocol.READY
    second = hand_over(more)
    kind, payload = second.next_frame()
    assert kind == protocol.READY
    assert json.loads(payload)["signature"].startswith("add(")
    assert second.add("B" * 16, 2, 3) == 5
    assert first.add("A" * 16, 4, 5) == 9
    assert second.add("C" * 16, 10, 1) == 11


def test_a_server_going_away_leaves_the_instance_to_the_others_until_shutdown(
    shared_worker: tuple[subprocess.Popen[bytes], Peer, socket.socket],
) -> None:
    process, first, more = shared_worker
    assert first.next_frame()[0] == protocol.READY
    first.sock.close()  # its server died: the instance goes on
    second = hand_over(more)
    assert second.next_frame()[0] == protocol.READY
    assert second.add("D" * 16, 1, 1) == 2
    third = hand_over(more)
    assert third.next_frame()[0] == protocol.READY
    second.sock.sendall(protocol.encode(protocol.SHUTDOWN))  # the leader stops it...
    assert third.add("E" * 16, 2, 2) == 4  # ...the others finish their calls...
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(0.5)
    third.sock.close()  # ...and let go: then it ends
    assert process.wait(30) == 0


def test_the_instance_ends_when_its_actor_is_gone(
    shared_worker: tuple[subprocess.Popen[bytes], Peer, socket.socket],
) -> None:
    process, first, more = shared_worker
    assert first.next_frame()[0] == protocol.READY
    more.close()
    assert process.wait(30) == 0
