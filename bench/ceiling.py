"""The ceiling: the thinnest ASGI server that answers the benchmark's requests.

No framework, no routing beyond a dict, no envelope: it parses the same JSON body with orjson,
computes the same function in-process (``x + y``; the same RandomForest, loaded with joblib
from the wine example's ``results/classifier.pkl``) and returns ``{"result": ...}``. Whatever
modelhost does beyond this is its overhead. Run it as::

    python -m bench.ceiling --port 8001 --workers 2

which is ``uvicorn bench.ceiling:app --workers 2 --loop uvloop --http httptools
--no-access-log`` with one change: the HTTP protocol class below turns TCP_NODELAY on for every
accepted socket, so Nagle's algorithm can never add 40 ms to a 1-connection run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bench.cases import SINGLE_THREAD_ENV, WINE_MODEL

# Before numpy is imported (by joblib), like modelhost's instances: one BLAS/OpenMP thread.
os.environ.update({name: os.environ.get(name, value) for name, value in SINGLE_THREAD_ENV.items()})

import joblib
import numpy as np
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_FOREST: Any = joblib.load(WINE_MODEL)


def _add(request: dict[str, Any]) -> Any:
    data = request["data"]
    return data["x"] + data["y"]


def _rf(request: dict[str, Any]) -> Any:
    row = np.asarray(request["parameters"][0], dtype=np.float64).reshape(1, -1)
    return int(_FOREST.predict(row)[0])


HANDLERS: dict[str, Callable[[dict[str, Any]], Any]] = {"/add": _add, "/rf": _rf}
_JSON_HEADERS = [(b"content-type", b"application/json")]


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    while message.get("more_body", False):
        message = await receive()
        body += message.get("body", b"")
    return body


async def _respond(send: Send, status: int, payload: bytes) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /add or /rf with the benchmark body; GET /health for the start-up probe."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/health":
        await _respond(send, 200, b'{"status":"ok"}')
        return
    handler = HANDLERS.get(scope["path"])
    if handler is None:
        await _respond(send, 404, b'{"error":"not found"}')
        return
    request = orjson.loads(await _read_body(receive))
    await _respond(send, 200, orjson.dumps({"result": handler(request)}))


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with TCP_NODELAY forced on for each accepted socket.

    The ASGI scope does not expose the socket, so this is the one place to set it. The first
    connection of each worker logs whether it was already on (uvloop sets it itself), which is
    the evidence ``run.py`` reports for the same uvicorn + uvloop stack modelhost runs on.
    """

    reported = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            before = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not NoDelayHttpToolsProtocol.reported:
                NoDelayHttpToolsProtocol.reported = True
                print(f"ceiling: TCP_NODELAY was {int(bool(before))} on accept", file=sys.stderr)
        super().connection_made(transport)


def main(argv: list[str] | None = None, app: str = "bench.ceiling:app") -> None:
    """Serve the ceiling (or another ASGI ``app`` of the bench, the hop ceiling's) on
    127.0.0.1 (a benchmark against loopback only)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args(argv)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=options.port,
        workers=options.workers,
        loop="uvloop",
        http="bench.ceiling:NoDelayHttpToolsProtocol",
        lifespan="off",
        access_log=False,
        log_level="info",
    )


if __name__ == "__main__":
    main()
