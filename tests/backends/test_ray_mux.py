"""Several servers' connections onto one R worker's connection (``ray_mux.FrameMux``), with a
stand-in for the R worker that speaks the framed protocol (docs/api.md, the protocol in
runtime/protocol.py) on the other end of a socket pair.

The expected behaviour is docs/scaling.md, "Several servers with the Ray backend": every
server's connection gets the worker's READY (also one that joins later), each answer goes back
to the connection its call came from, a server that goes away does not end the worker, and the
worker is told SHUTDOWN once a server said it and no connection is left.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from modelhost.backends.ray_mux import FrameMux
from modelhost.runtime import protocol


class StandInWorker:
    """Says READY, then answers each CALL with its body's length; notes SHUTDOWN."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.shutdown = threading.Event()
        sock.sendall(protocol.encode(protocol.READY, json.dumps({"signature": "f(x)"}).encode()))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """End its thread (a recv on a socket closed under it would fail), then its socket."""
        with contextlib.suppress(OSError):  # the relay may have closed its end already
            self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self.sock.close()

    def _run(self) -> None:
        decoder = protocol.FrameDecoder()
        while data := self.sock.recv(1 << 16):
            for kind, payload in decoder.feed(data):
                if kind == protocol.SHUTDOWN:
                    self.shutdown.set()
                    return
                request_id, body = protocol.decode_call(payload)
                self.sock.sendall(protocol.encode_result(request_id, 1.0, str(len(body)).encode()))


class Server:
    def __init__(self, mux: FrameMux) -> None:
        self.sock, theirs = socket.socketpair()
        self.sock.settimeout(10)
        self.decoder = protocol.FrameDecoder()
        self.frames: list[tuple[int, bytes]] = []
        mux.add(theirs)

    def next_frame(self) -> tuple[int, bytes]:
        while not self.frames:
            data = self.sock.recv(1 << 16)
            assert data, "the relay closed the connection"
            self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    def call(self, request_id: str, body: bytes) -> None:
        self.sock.sendall(protocol.encode_call(request_id, body))

    def answer(self) -> tuple[str, bytes]:
        kind, payload = self.next_frame()
        assert kind == protocol.RESULT
        answered, _, result = protocol.decode_result(payload)
        return answered, result


@pytest.fixture
def relay() -> Iterator[tuple[FrameMux, StandInWorker, list[Server]]]:
    ours, theirs = socket.socketpair()
    stand_in = StandInWorker(ours)
    mux = FrameMux(theirs)
    servers: list[Server] = []
    yield mux, stand_in, servers
    for server in servers:
        server.sock.close()
    stand_in.close()
    theirs.close()


def test_each_answer_goes_back_to_the_server_that_sent_the_call(
    relay: tuple[FrameMux, StandInWorker, list[Server]],
) -> None:
    mux, _worker, servers = relay
    a, b = Server(mux), Server(mux)
    servers += [a, b]
    assert a.next_frame()[0] == protocol.READY
    assert b.next_frame()[0] == protocol.READY
    a.call("A" * 16, b"xx")
    b.call("B" * 16, b"yyy")
    a.call("C" * 16, b"z")
    assert b.answer() == ("B" * 16, b"3")
    assert [a.answer(), a.answer()] == [("A" * 16, b"2"), ("C" * 16, b"1")]


def test_a_server_that_joins_later_gets_ready_and_the_worker_ends_after_the_last_lets_go(
    relay: tuple[FrameMux, StandInWorker, list[Server]],
) -> None:
    mux, worker, servers = relay
    a = Server(mux)
    servers.append(a)
    assert a.next_frame()[0] == protocol.READY
    a.sock.close()  # its server died: the worker goes on
    b, c = Server(mux), Server(mux)
    servers += [b, c]
    assert b.next_frame()[0] == protocol.READY
    assert c.next_frame()[0] == protocol.READY
    b.sock.sendall(protocol.encode(protocol.SHUTDOWN))  # the leader stops it
    c.call("D" * 16, b"four")
    assert c.answer() == ("D" * 16, b"4")
    assert not worker.shutdown.wait(0.3)
    c.sock.close()
    assert worker.shutdown.wait(10)
