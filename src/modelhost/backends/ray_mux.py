"""Several servers' connections onto the one connection of an R worker on a Ray node.

The R worker cannot take an inherited socket: it connects to its actor over loopback, and the
actor relays (``backends/ray_node.py``). With several servers sharing the instance
(``backend = ray`` on PostgreSQL), :class:`FrameMux` does the relaying by frames: calls from
every server's connection go to the worker in the order they arrive (it runs one at a time),
each answer goes back on the connection its call came from (matched by request id), and the
worker's READY (or LOAD_FAILED) frame goes to every connection, also to those that join later.

A server's connection that closes is dropped and the worker goes on; it is told SHUTDOWN once
a server said SHUTDOWN and no connection is left, as :func:`runtime.worker.serve_shared` does
for the Python worker.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from modelhost.runtime import protocol

_RECV_BYTES = 1 << 16


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class FrameMux:
    """Relays frames between the servers' connections and one worker connection."""

    def __init__(self, worker: socket.socket, first: bytes = b"") -> None:
        """``first``: what was read from ``worker`` already (its first frame, which proved it),
        relayed before anything read later."""
        self._worker = worker
        self._first = first
        self._to_worker = threading.Lock()
        self._lock = threading.Lock()
        self._peers: dict[socket.socket, threading.Lock] = {}
        #: request id -> the connection its call came on
        self._owners: dict[str, socket.socket] = {}
        #: the worker's READY or LOAD_FAILED frame, for connections that join later
        self._hello: bytes | None = None
        self._ending = False
        self._closed = False
        threading.Thread(target=self._from_worker, daemon=True).start()

    def add(self, connection: socket.socket) -> None:
        """Relay a server's connection (already proven by its token)."""
        with self._lock:
            if self._closed:
                _close(connection)
                return
            self._peers[connection] = threading.Lock()
            hello = self._hello
        if hello is not None:
            self._send(connection, hello)
        threading.Thread(target=self._from_peer, args=(connection,), daemon=True).start()

    def _send(self, connection: socket.socket, frame: bytes) -> None:
        with self._lock:
            lock = self._peers.get(connection)
        if lock is None:
            return
        with lock, contextlib.suppress(OSError):  # that server went away; the others go on
            connection.sendall(frame)

    def _to(self, frame: bytes) -> None:
        with self._to_worker, contextlib.suppress(OSError):
            self._worker.sendall(frame)

    def _from_worker(self) -> None:
        decoder = protocol.FrameDecoder()
        data, self._first = self._first, b""
        try:
            while data or (data := self._worker.recv(_RECV_BYTES)):
                frames, data = decoder.feed(data), b""
                for kind, payload in frames:
                    frame = protocol.encode(kind, payload)
                    if kind in (protocol.READY, protocol.LOAD_FAILED):
                        with self._lock:
                            self._hello = frame
                            peers = list(self._peers)
                        for peer in peers:
                            self._send(peer, frame)
                    elif kind in (protocol.RESULT, protocol.ERROR):
                        request_id = payload[: protocol.REQUEST_ID_LENGTH].decode("ascii")
                        with self._lock:
                            owner = self._owners.pop(request_id, None)
                        if owner is not None:
                            self._send(owner, frame)
        except (OSError, protocol.ProtocolError):
            pass
        with self._lock:  # the worker is gone: so are the servers' connections
            self._closed = True
            peers = list(self._peers)
            self._peers.clear()
        for peer in peers:
            _close(peer)
        _close(self._worker)

    def _from_peer(self, connection: socket.socket) -> None:
        decoder = protocol.FrameDecoder()
        said_shutdown = False
        try:
            while not said_shutdown and (data := connection.recv(_RECV_BYTES)):
                for kind, payload in decoder.feed(data):
                    if kind == protocol.SHUTDOWN:
                        said_shutdown = True
                        break
                    if kind == protocol.CALL:
                        ids = [payload[: protocol.REQUEST_ID_LENGTH].decode("ascii")]
                    elif kind == protocol.BATCH:
                        ids = [request_id for request_id, _ in protocol.decode_batch(payload)]
                    else:
                        continue
                    with self._lock:
                        for request_id in ids:
                            self._owners[request_id] = connection
                    self._to(protocol.encode(kind, payload))
        except (OSError, protocol.ProtocolError):
            pass
        with self._lock:
            self._peers.pop(connection, None)
            self._ending = self._ending or said_shutdown
            last = self._ending and not self._peers
        _close(connection)
        if last:
            self._to(protocol.encode(protocol.SHUTDOWN))
