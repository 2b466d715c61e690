"""Steering a new connection to the process that holds the instances it calls (setting
``gateway_processes`` above 1).

The kernel spreads the port's connections over the processes (``SO_REUSEPORT``) before any of
them has seen a request. A process that holds no instance of the version a call is routed to
passes the call on (:mod:`modelhost.gateway.peers`, :mod:`modelhost.gateway.proxy`): an HTTP
round trip over a Unix socket per call, which costs both processes more than the call itself
for a short function. And a batching version's calls are only batched with the calls of the
same process, so spreading its callers over processes halves the batches.

So the first request of a connection decides where the connection lives. When this process
holds no instance of the version its first call is routed to and another process does, the
process hands the connection itself (its socket, by ``SCM_RIGHTS``) and the bytes it has read
from it so far to that process, and forgets it; the other process serves it from then on as if
it had accepted it. Nothing was answered yet, so nothing of HTTP's state moves. Later calls on
the connection that go elsewhere are passed on as before. A connection is steered at most once,
only from the port (never one another process passed on), and only when its first read holds
the request line; anything unusual (a full queue, a process that is gone) keeps the connection
where it is, which is always correct, only slower.

Each process listens on ``steer-N.sock`` in the server's private directory (mode 0700) for
``SOCK_SEQPACKET`` connections from the others: one message per steered connection, its bytes
with the socket attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from modelhost.gateway.board import LoadBoard

logger = logging.getLogger(__name__)

#: a connection whose first read is larger than this is not steered (the bytes travel in one
#: message, within the socket's buffer)
MAX_STEERED_BYTES = 64 * 1024
_INVOCATION = b"POST /models/"


def socket_path(directory: str, process: int) -> str:
    """Where process ``process`` (0 the main one) takes connections from the others."""
    return os.path.join(directory, f"steer-{process}.sock")


class Steering:
    """One process's side: where a new connection should live, handing it there, and taking
    the connections the others hand to this one."""

    def __init__(
        self,
        board: LoadBoard,
        process: int,
        directory: str,
        slot_for: Callable[[str], int | None],
    ) -> None:
        self.board = board
        self.process = process
        self.directory = directory
        #: the board slot of the version an invocation path routes a call to now
        self._slot_for = slot_for
        self._out: dict[int, socket.socket] = {}
        #: connections this process handed to another one, and took from another one
        self.handed = 0
        self.taken = 0
        path = socket_path(directory, process)
        with contextlib.suppress(FileNotFoundError):  # left by this process's predecessor
            os.unlink(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._listener.bind(path)
        self._listener.listen(64)
        self._listener.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._make: Callable[[], Any] | None = None
        self._incoming: list[socket.socket] = []

    # ------------------------------------------------------------------ handing a connection

    def target(self, data: bytes) -> int | None:
        """The process a connection whose first read is ``data`` should live in, or None
        (here: not an invocation, a version this process holds an instance of, or one that no
        process holds)."""
        if not data.startswith(_INVOCATION) or len(data) > MAX_STEERED_BYTES:
            return None
        end = data.find(b" ", 5)
        if end < 0:
            return None
        path = data[5:end].partition(b"?")[0]
        if b"%" in path:  # the gateway routes the decoded path; leave odd ones alone
            return None
        slot = self._slot_for(path.decode("latin-1"))
        return None if slot is None else self.board.holder(slot, self.process)

    def hand(self, process: int, connection: int, data: bytes) -> bool:
        """Send the connection's socket (file descriptor ``connection``) and ``data``, the bytes
        read from it, to ``process``; False when that cannot be done now (nothing was sent)."""
        try:
            out = self._out.get(process)
            if out is None:
                out = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                out.setblocking(False)  # a full backlog must not stall this event loop
                try:
                    out.connect(socket_path(self.directory, process))
                except OSError:
                    out.close()
                    raise
                self._out[process] = out
            socket.send_fds(out, [data], [connection])
        except BlockingIOError:
            return False  # its queue is full: serve it here
        except OSError as exc:  # gone, or being replaced: connect again next time
            stale = self._out.pop(process, None)
            if stale is not None:
                stale.close()
            logger.debug("could not steer a connection to process %d: %s", process, exc)
            return False
        self.handed += 1
        return True

    # ------------------------------------------------------------------ taking connections

    def start(self, loop: asyncio.AbstractEventLoop, make_protocol: Callable[[], Any]) -> None:
        """Take the connections the other processes hand here; ``make_protocol`` makes the
        HTTP protocol for one, as the server does for a connection it accepted."""
        self._loop, self._make = loop, make_protocol
        loop.add_reader(self._listener.fileno(), self._accept)

    def _accept(self) -> None:
        assert self._loop is not None
        while True:
            try:
                peer, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            peer.setblocking(False)
            self._incoming.append(peer)
            self._loop.add_reader(peer.fileno(), self._receive, peer)

    def _receive(self, peer: socket.socket) -> None:
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(peer, MAX_STEERED_BYTES, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds, flags = b"", [], 0
            if not data and not fds:  # the other process went away
                self._drop(peer)
                return
            if len(fds) != 1 or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                for fd in fds:
                    os.close(fd)
                continue
            self._attach(socket.socket(fileno=fds[0]), data)

    def _attach(self, connection: socket.socket, data: bytes) -> None:
        assert self._loop is not None
        assert self._make is not None
        protocol = self._make()
        protocol.steered_bytes = data  # read first, before anything else on the connection
        self.taken += 1
        task = self._loop.create_task(
            self._loop.connect_accepted_socket(lambda: protocol, sock=connection)
        )
        task.add_done_callback(_log_failure)

    def _drop(self, peer: socket.socket) -> None:
        if self._loop is not None:
            self._loop.remove_reader(peer.fileno())
        with contextlib.suppress(ValueError):
            self._incoming.remove(peer)
        peer.close()

    def close(self) -> None:
        for peer in list(self._incoming):
            self._drop(peer)
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._listener.fileno())
        self._listener.close()
        for out in self._out.values():
            out.close()
        self._out.clear()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning(
            "could not serve a connection another process handed over: %s", task.exception()
        )


def serve_steered(server: Any, steering: Steering) -> None:
    """Once ``server`` (a started ``uvicorn.Server``) accepts connections: its protocol steers
    new ones with ``steering``, and takes the others' as its own."""
    config = server.config
    protocol = config.http_protocol_class
    steering.start(
        asyncio.get_running_loop(),
        lambda: protocol(
            config=config, server_state=server.server_state, app_state=server.lifespan.state
        ),
    )
    protocol.steering = steering
