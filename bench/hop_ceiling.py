"""The ceiling with a process boundary: what any server that runs the function outside its own
process pays at least.

modelhost runs each model's code in a separate, sandboxed process (issue 16's ceiling runs it
in the server's process, which modelhost never may). This server is ``bench/ceiling.py`` with one
change: each uvicorn worker forks a child on its first request, and every request's body crosses a
socketpair to that child, which parses it with orjson, computes the same function and sends
``{"result": ...}`` back; the worker answers with those bytes. No framework, no envelope, no
auth, no timeouts, no metrics: the cheapest possible hop, so ``modelhost - hop ceiling`` is what
modelhost's own work costs and ``hop ceiling - ceiling`` is what the process boundary costs.

    python -m bench.hop_ceiling --port 8002 --workers 2

Frames both ways are a 4-byte big-endian length and the bytes; a request's first byte names
the function (``HANDLER_IDS``). The child answers in order, so the worker matches answers to
requests first in, first out.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections import deque
from typing import Any

import orjson

from bench import ceiling
from bench.ceiling import HANDLERS, Receive, Scope, Send, _read_body

_LENGTH = struct.Struct(">I")
HANDLER_IDS = {path: bytes([number]) for number, path in enumerate(sorted(HANDLERS))}
_BY_ID = {number[0]: HANDLERS[path] for path, number in HANDLER_IDS.items()}
_JSON = (b"content-type", b"application/json")


def _child(sock: socket.socket) -> None:
    """Answer frames until the worker goes away (blocking, like modelhost's instances)."""
    buffer = b""
    while True:
        data = sock.recv(1 << 16)
        if not data:
            os._exit(0)
        buffer += data
        while len(buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer)
            if len(buffer) < _LENGTH.size + size:
                break
            frame = buffer[_LENGTH.size : _LENGTH.size + size]
            buffer = buffer[_LENGTH.size + size :]
            answer = orjson.dumps({"result": _BY_ID[frame[0]](orjson.loads(frame[1:]))})
            sock.sendall(_LENGTH.pack(len(answer)) + answer)


class _Hop(asyncio.Protocol):
    """The worker's end: futures answered in the order their requests were sent."""

    def __init__(self) -> None:
        self.waiting: deque[asyncio.Future[bytes]] = deque()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self.buffer)
            if len(self.buffer) < _LENGTH.size + size:
                return
            answer = self.buffer[_LENGTH.size : _LENGTH.size + size]
            self.buffer = self.buffer[_LENGTH.size + size :]
            self.waiting.popleft().set_result(answer)

    def call(self, handler: bytes, body: bytes) -> asyncio.Future[bytes]:
        assert self.transport is not None
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.transport.write(_LENGTH.pack(len(body) + 1) + handler + body)
        return future


_hop: _Hop | None = None


async def _start_child() -> _Hop:
    """Fork this worker's child (on its first request: the child never touches the loop)."""
    parent, child = socket.socketpair()
    if os.fork() == 0:
        parent.close()
        _child(child)
    child.close()
    _, protocol = await asyncio.get_running_loop().create_unix_connection(_Hop, sock=parent)
    return protocol


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /add or /rf, computed in the child; GET /health for the start-up probe."""
    global _hop
    if scope["type"] != "http":
        return
    if scope["path"] == "/health":
        payload = b'{"status":"ok"}'
    else:
        handler = HANDLER_IDS.get(scope["path"])
        if handler is None:
            payload = b'{"error":"not found"}'
        else:
            if _hop is None:
                _hop = await _start_child()
            payload = await _hop.call(handler, await _read_body(receive))
    headers: list[Any] = [_JSON, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def main(argv: list[str] | None = None) -> None:
    """Serve the hop ceiling on 127.0.0.1, exactly as ``bench.ceiling`` serves the ceiling."""
    ceiling.main(argv, app="bench.hop_ceiling:app")


if __name__ == "__main__":
    main()
