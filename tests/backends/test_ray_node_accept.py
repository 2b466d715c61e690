"""How a Ray node's actor takes its R worker's connection (``ray_node._accept_from``): only one
made by the worker's own processes. The port is on loopback, where any process of the machine
can connect first (docs/security.md, "R models cannot turn the network off")."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from modelhost.backends.ray_node import _accept_from, _peer_pid

#: connects to the port given, says nothing, and waits to be closed
STRANGER = (
    "import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
    "print('connected', flush=True); s.recv(1)"
)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def test_the_peer_of_a_loopback_connection_is_the_process_that_made_it(
    listener: socket.socket,
) -> None:
    mine = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    assert _peer_pid(accepted) == os.getpid()
    accepted.close()
    mine.close()


def test_a_strangers_connection_is_closed_and_the_workers_taken_after_it(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    stranger = subprocess.Popen(
        [sys.executable, "-c", STRANGER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert stranger.stdout is not None
        assert stranger.stdout.readline() == "connected\n"
        worker = socket.create_connection(("127.0.0.1", port))  # the "worker": this process
        taken = _accept_from(listener, lambda: {os.getpid()}, timeout=30)
        assert _peer_pid(taken) == os.getpid()
        assert stranger.wait(timeout=30) == 0  # its connection was closed on it
        taken.close()
        worker.close()
    finally:
        stranger.kill()
        stranger.wait()
        if stranger.stdout is not None:
            stranger.stdout.close()


def test_no_worker_connection_within_the_timeout_is_a_timeout(listener: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        _accept_from(listener, lambda: {os.getpid()}, timeout=0.2)
