"""One invocation request and its response on a connection, in place of uvicorn's general
``RequestResponseCycle`` (:class:`~modelhost.gateway.transport.GatheringHttpToolsProtocol`
starts one for ``POST /models/...`` requests).

The same ASGI contract, for the one kind of request the gateway answers most: it runs the app
(the host guard, then the gateway) as uvicorn's cycle does, with the same ``receive`` and
``send`` semantics and the same answers when the app fails, but does per request only what such
a request needs. uvicorn's cycle makes an ``asyncio.Event`` per request, checks every response
header with two regular expressions, writes the head and the body separately and schedules a
keep-alive timer after every response; on a call to a tiny function those cost about as much
as the rest of the gateway's work. Here the head waits for the body and both go out in one
write, the headers are checked for line breaks in one pass over the whole head, and the
connection's own timer (:mod:`modelhost.gateway.transport`) also closes an idle connection.

Requests it does not take (anything but an HTTP/1.1 ``POST`` to an invocation path without
``Expect: 100-continue``) keep uvicorn's cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

if TYPE_CHECKING:
    from uvicorn.protocols.http.flow_control import FlowControl

    from modelhost.gateway.transport import GatheringTransport

logger = logging.getLogger("uvicorn.error")

#: the scope key of an invocation request's :meth:`InvocationCycle.respond`: the app may
#: answer through it instead of two ``send`` messages. Only for an app that would send its
#: answer unchanged through ``send``, as the gateway does (no middleware between them wraps it).
RESPOND = "modelhost.respond"

Message = MutableMapping[str, Any]
_SERVER_ERROR = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"21"),
    (b"connection", b"close"),
]


class InvocationCycle:
    """A request's body as it comes, the app's answer as it goes.

    The protocol reads the attributes uvicorn's own cycle has (``body``, ``more_body``,
    ``response_complete``, ``keep_alive``, ``disconnected``, ``message_event``), so the
    protocol's pipelining, flow control and shutdown work unchanged.
    """

    __slots__ = (
        "_flagged",
        "_head",
        "_left",
        "_on_response",
        "_waiter",
        "body",
        "default_headers",
        "disconnected",
        "flow",
        "keep_alive",
        "more_body",
        "response_complete",
        "response_started",
        "scope",
        "transport",
    )

    def __init__(
        self,
        scope: Message,
        transport: GatheringTransport,
        flow: FlowControl,
        default_headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        on_response: Callable[[], None],
    ) -> None:
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.default_headers = default_headers
        self.keep_alive = keep_alive
        self._on_response: Callable[[], None] | None = on_response
        self.body = b""
        self.more_body = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        #: the response's status line and headers, until its body goes with them
        self._head: bytes | None = None
        #: bytes of body the Content-Length still promises; None: chunked
        self._left: int | None = 0
        #: uvicorn's message event: set when body bytes came, the body ended or the
        #: connection went; a receive waits for it and clears it
        self._flagged = False
        self._waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ the protocol's side

    @property
    def message_event(self) -> InvocationCycle:
        """What the protocol sets as it would uvicorn's ``asyncio.Event``."""
        return self

    def set(self) -> None:
        self._flagged = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run_asgi(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self.transport.close()
        else:
            if result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                logger.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                logger.error("ASGI callable returned without completing response.")
                self.transport.close()
        finally:
            self._on_response = None

    async def _send_500(self) -> None:
        await self.send({"type": "http.response.start", "status": 500, "headers": _SERVER_ERROR})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    # ------------------------------------------------------------------ ASGI

    async def receive(self) -> Message:
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            if not self._flagged:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            self._flagged = False
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": self.body, "more_body": self.more_body}
        self.body = b""
        return message

    def respond(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, now: bool = False
    ) -> bool:
        """The whole answer at once, as ``send`` would write it after a start and one body
        message, without either message or await: the gateway's own answers take this way
        (:data:`RESPOND`). False when it cannot (a response began already, or the client reads
        too slowly and writes must wait): then send it with ``send``. ``now``: write it at
        once even while other calls are being answered (see ``GatheringTransport``)."""
        if self.response_started or self.flow.write_paused:
            return False
        if self.disconnected:
            return True
        self.response_started = True
        self._start(status, headers)
        head, self._head = self._head, None
        if self._left is None:  # no Content-Length: chunked
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        elif self._left != len(body):
            raise RuntimeError("Response content length does not match Content-Length")
        self._left = 0
        self.response_complete = True
        self.set()
        data = head + body if head is not None else body
        if now:
            self.transport.write_now(data)
        else:
            self.transport.write_answer(data)
        if not self.keep_alive:
            self.transport.close()
        on_response = self._on_response
        if on_response is not None:
            on_response()
        return True

    async def send(self, message: Message) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected 'http.response.start', but got '{kind}'.")
            self.response_started = True
            self._start(message["status"], message.get("headers", ()))
            return
        if self.response_complete:
            raise RuntimeError(f"Unexpected '{kind}' after the response was complete.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected 'http.response.body', but got '{kind}'.")
        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        left = self._left
        if left is None:  # chunked
            chunks = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                chunks.append(b"0\r\n\r\n")
            data = b"".join(chunks)
        else:
            if len(body) > left:
                raise RuntimeError("Response content longer than Content-Length")
            self._left = left - len(body)
            data = body
        head, self._head = self._head, None
        if head is not None:  # the first of the body goes out with the head, in one write
            data = head + data
        if not more_body:
            if self._left:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.set()
            self.transport.write_answer(data)
            if not self.keep_alive:
                self.transport.close()
            on_response = self._on_response
            if on_response is not None:
                on_response()
        elif data:
            self.transport.write(data)

    def _start(self, status: int, headers: Any) -> None:
        lines = [STATUS_LINE[status]]
        length: int | None = None
        closing = False
        for name, value in (*self.default_headers, *headers):
            name = name.lower()
            if name == b"content-length" and length is None:
                length = int(value)
            elif name == b"connection" and b"close" in value.lower():
                closing = True
            lines += (name, b": ", value, b"\r\n")
        count = len(lines) // 4  # header lines so far
        if closing:
            self.keep_alive = False
        elif not self.keep_alive:
            lines.append(b"connection: close\r\n")
            count += 1
        bodiless = status in (204, 304)
        if length is None and not bodiless:
            lines.append(b"transfer-encoding: chunked\r\n")
            count += 1
        lines.append(b"\r\n")
        head = b"".join(lines)
        # A header name or value with a line break (or another control character, as uvicorn
        # refuses) would split the response: the head's only ones are the CR LF of the status
        # line, of each header line and of the blank line.
        if len(head) - len(head.translate(None, _CONTROL)) != 2 * (count + 2):
            raise RuntimeError("Invalid HTTP header name or value.")
        self._left = None if length is None and not bodiless else (length or 0)
        self._head = head


#: the bytes uvicorn refuses in a header name or value, which include CR and LF (not tab)
_CONTROL = bytes(range(0x20)).replace(b"\t", b"") + b"\x7f"
