"""uvicorn's httptools protocol with two additions: responses in one write, and limits on what
a connection may take from the server.

**One write.** A transport that gathers the writes of one event-loop turn (a response's status
line and headers, then its body) and hands them to the socket together. uvicorn writes a
response's head and its body separately, each a ``send`` system call that also wakes the client
for half a response. On the invocation path, where the rest of a call costs a few tens of
microseconds, the second system call is a noticeable share.

**Answers at the end of the turn.** The answer of the only call a process is answering is
written at once. While other calls are being answered too (:class:`Answering` counts them, from
a request's head to its answer), answers wait for the end of the loop's turn: the answers an
instance sent together are all made first, then written one after another. Each write to a
socket runs the kernel's whole loopback path, which leaves the caches cold for the next answer's
Python: answering a turn's calls together measured 17 % more calls a second to ``add`` at 32
connections, and the same latency at one (``bench/README.md``). The gateway asks for a batching
version's answers at once (``InvocationCycle.respond(..., now=True)``): held to the end of the
turn, they reach their callers after the instance went idle, and the first next call would
leave in a batch of its own.

**Limits** (:class:`~modelhost.gateway.limits.ConnectionLimits`). httptools has no limit on
the size of a request's head and uvicorn no timeout for reading one, so a client could hold a
connection open forever by sending a header a byte at a time (slowloris), or fill memory with
one endless header. Each connection has one timer that is re-armed, never one per request: it
fires at the earliest deadline that may apply and, if the connection made progress meanwhile,
arms itself again for the later one. Per request the hot path only stores a phase and a time.

**Calls without a task.** With :attr:`GatheringHttpToolsProtocol.direct` set, an invocation
request waits until its body is whole and is offered to it (``Gateway.direct``): the call is
then answered without a task, or, declined, runs in the app as any other request. A body over
uvicorn's read limit goes to the app while it still comes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from modelhost import errors, urls
from modelhost.gateway.app import Receive, Run, Scope, Send, new_request_id
from modelhost.gateway.cycle import RESPOND, InvocationCycle
from modelhost.gateway.envelope import error_response
from modelhost.gateway.limits import ConnectionLimits

if TYPE_CHECKING:
    from modelhost.gateway.steering import Steering

logger = logging.getLogger(__name__)

_INVOCATION_PATH = urls.INVOKE_PREFIX.encode()


class Direct(Protocol):
    """Starts an invocation request's call without a task (``Gateway.direct`` behind the
    host check), or says False."""

    def __call__(self, scope: Scope, cycle: InvocationCycle, run: Run) -> bool: ...


class Answering:
    """How many of a process's connections are in the middle of an invocation request, from
    its head until its answer is written (one per connection, pipelined requests included)."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0


class GatheringTransport:
    """Wraps a transport: writes made in one loop turn go out as one write at its end."""

    __slots__ = ("_answering", "_chunks", "_loop", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        answering: Answering | None = None,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._chunks: list[bytes] = []
        self._answering = answering if answering is not None else Answering()

    def write(self, data: bytes) -> None:
        if not self._chunks:
            self._loop.call_soon(self._flush)
        self._chunks.append(data)

    def flush(self) -> None:
        """Write what was gathered now (the flush already scheduled then finds nothing)."""
        chunks, self._chunks = self._chunks, []
        if chunks and not self._transport.is_closing():
            self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    _flush = flush

    def write_now(self, data: bytes) -> None:
        """Write ``data`` now, after what was gathered, in one write."""
        chunks, self._chunks = self._chunks, []
        if chunks:
            chunks.append(data)
            data = b"".join(chunks)
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_answer(self, data: bytes) -> None:
        """Write the end of an answer: now when it is the only call the process is answering
        (a lone caller gets it one pass of the event loop sooner), else with the other writes
        at the end of the loop's turn, after every answer of the turn was made (see the
        module's docstring)."""
        if self._answering.calls > 1:
            self.write(data)
        else:
            self.write_now(data)

    def is_closing(self) -> bool:  # on every response: not through __getattr__
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# What a connection is waiting for. The phase after a request's body (the app is answering) is
# not stored: it is the body phase with ``cycle.more_body`` false, which uvicorn keeps anyway.
_HEAD = 0  # a request line and headers, since connecting or the end of the previous answer
_BODY = 1  # the rest of a request's body, or the app's answer
_DONE = 2  # nothing more: the connection was refused or is gone


def _refusal(error: errors.ModelhostError) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app that answers ``error`` without reading the body, and closes the connection."""

    async def refuse(_scope: Scope, _receive: Receive, send: Send) -> None:
        status, headers, body = error_response(error, new_request_id())
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with one write per response and the :attr:`limits`."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    #: with gateway processes: where a new connection should live (set once serving)
    steering: ClassVar[Steering | None] = None
    #: what another process read from a connection it handed to this one, read here first
    steered_bytes: bytes | None = None
    #: starts an invocation request's call without a task, or says False
    #: (:meth:`modelhost.gateway.app.Gateway.direct` behind the host check); None: never
    direct: ClassVar[Direct | None] = None
    #: an invocation request whose body is still coming, for :attr:`direct`
    _deferred: InvocationCycle | None = None
    #: the process's connections in the middle of a call (one for every protocol_with class)
    answering: ClassVar[Answering] = Answering()
    #: counted in :attr:`answering`: a call of this connection is not answered yet
    _counted: bool = False

    _phase: int
    _since: float  # when the current phase began, or the body's last bytes came
    _head_bytes: int  # bytes received in the head phase, perhaps with some of the body
    _timer: asyncio.TimerHandle | None
    _timer_at: float
    _fresh: bool  # no byte of it read yet, and it may be steered
    _idle: bool  # waiting for the next request after an answer (keep-alive)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = GatheringTransport(  # type: ignore[assignment]
            self.transport, self.loop, self.answering
        )
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._await_head(self.loop.time())
        data, self.steered_bytes = self.steered_bytes, None
        # Steered at most once: a connection from the port (not one a process passed a call
        # on, which has no client address), and not one handed over already.
        self._fresh = data is None and self.steering is not None and self.client is not None
        if data is not None:
            self.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _DONE
        self._deferred = None
        if self._counted:
            self._counted = False
            self.answering.calls -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    # ------------------------------------------------------------------ reading a request

    def data_received(self, data: bytes) -> None:
        if self._fresh:
            self._fresh = False
            if self._steer(data):
                return
        if self._phase == _HEAD:
            self._head_bytes += len(data)
        elif self._phase == _BODY:
            self._since = self.loop.time()  # the body timeout counts from the last bytes
        super().data_received(data)
        if self._phase == _HEAD and self._head_bytes > self.limits.max_header_bytes:
            # Still no end of the headers: answer now rather than let httptools buffer more.
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._since = self.loop.time()
        limits = self.limits
        error: errors.ModelhostError | None = None
        # The bytes counted may include some of the body; only then measure the head itself.
        if self._head_bytes > limits.max_header_bytes and self._head_size() > (
            limits.max_header_bytes
        ):
            error = self._headers_too_large()
        elif len(self.connections) > limits.max_connections:  # this one counts among them
            logger.warning("refused a request: %d connections are open", len(self.connections))
            error = errors.Unavailable(
                "The server has too many open connections (setting max_connections); retry "
                "in a moment.",
                headers={"Retry-After": "1"},
            )
        if error is None:
            if not self._invocation():
                super().on_headers_complete()
            return
        # uvicorn refuses a request over its own limit_concurrency the same way: the request
        # gets another app. That one answers in plain text, this one in the error envelope.
        app, self.app = self.app, _refusal(error)
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def _invocation(self) -> bool:
        """Start an :class:`InvocationCycle` if this request is a call of a model (an HTTP/1.1
        POST to an invocation path, no ``Expect``, nothing unusual in its URL); False for any
        other request, which gets uvicorn's cycle."""
        url = self.url
        if not url.startswith(_INVOCATION_PATH) or self.expect_100_continue or self.root_path:
            return False
        parser = self.parser
        if (
            parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
            or parser.should_upgrade()
        ):
            return False
        raw_path, _, query = url.partition(b"?")
        # uvicorn decodes percent-escapes and drops a fragment: leave such paths to it.
        if b"%" in raw_path or b"#" in url or not raw_path.isascii():
            return False
        path = raw_path.decode("ascii")
        if not urls.is_invocation(path):
            return False
        scope = self.scope
        scope["method"] = "POST"
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        cycle = InvocationCycle(
            scope,  # type: ignore[arg-type]
            self.transport,  # type: ignore[arg-type]
            self.flow,
            self.server_state.default_headers,
            parser.should_keep_alive(),
            self.on_response_complete,
        )
        scope[RESPOND] = cycle.respond  # type: ignore[literal-required]
        if not self._counted:
            self._counted = True
            self.answering.calls += 1
        existing, self.cycle = self.cycle, cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            if self.direct is not None:  # started once its body is whole
                self._deferred = cycle
            else:
                self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]
        else:  # pipelined behind a request still being answered
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]
        return True

    def on_body(self, body: bytes) -> None:
        cycle = self._deferred
        if cycle is None:
            super().on_body(body)
            return
        # What uvicorn's does for a request that no app reads yet (one that is no upgrade
        # and has no answer: _invocation saw to both).
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:  # a large body: the app reads it as it comes
            self.flow.pause_reading()
            self._deferred = None
            cycle.set()
            self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]

    def on_message_complete(self) -> None:
        cycle = self._deferred
        if cycle is None:
            super().on_message_complete()
        else:
            self._deferred = None
            cycle.more_body = False
            cycle.set()  # a receive after a handover finds the body whole
            run = functools.partial(self._start_asgi_task, cycle)  # type: ignore[arg-type]
            scope: Scope = cycle.scope
            try:
                taken = self.direct is not None and self.direct(scope, cycle, run)
            except Exception:  # a bug: answered by the app, never as the parser's 400
                logger.exception("starting a call without a task failed; the app answers it")
                taken = False
            if not taken:
                self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        # uvicorn's, but for its keep-alive timer: a timer made after every response and
        # cancelled by the next request's bytes. The connection's own timer closes an idle
        # connection after uvicorn's timeout_keep_alive instead (see _expire).
        transport = self.transport
        answering = self.answering
        if self._counted and not self.pipeline:  # no call of this connection waits any more
            self._counted = False
            answering.calls -= 1
        if not answering.calls:
            # The whole response is written and no other call is being answered: send it now
            # rather than at the end of the loop's turn, one pass of the event loop (and, at
            # one connection, its poll) sooner.
            transport.flush()  # type: ignore[attr-defined]
        self.server_state.total_requests += 1
        if transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return  # a pipelined request runs
        cycle = self.cycle
        if not cycle.response_complete or cycle.more_body:
            return  # this one's body still comes
        self._await_head(self.loop.time(), idle=True)

    def _steer(self, data: bytes) -> bool:
        """Hand the connection, before anything of it was served, to the process that holds
        the instances its first call goes to (:mod:`modelhost.gateway.steering`)."""
        steering = self.steering
        assert steering is not None
        target = steering.target(data)
        if target is None:
            return False
        connection = self.transport.get_extra_info("socket")
        if connection is None or not steering.hand(target, connection.fileno(), data):
            return False
        # The other process has the socket now: close this copy without a word on it.
        self._phase = _DONE
        self.transport.abort()
        return True

    # ------------------------------------------------------------------ the timer

    def _await_head(self, now: float, *, idle: bool = False) -> None:
        """Wait for a request's head; ``idle``: after an answer, so an idle connection closes
        after uvicorn's ``timeout_keep_alive`` if no byte of the next request comes."""
        self._phase = _HEAD
        self._since = now
        self._head_bytes = 0
        self._idle = idle
        timeout = self.limits.header_timeout_seconds
        if idle:
            timeout = min(timeout, self.timeout_keep_alive)
        self._arm(now + timeout)

    def _arm(self, deadline: float) -> None:
        # A timer that fires early costs a check and re-arms itself; only one that would fire
        # too late is replaced. On a busy connection the deadline moves later with each request,
        # so the timer fires about once per header timeout, whatever the request rate.
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(deadline, self._expire)
        self._timer_at = deadline

    def _expire(self) -> None:
        self._timer = None
        if self._phase == _DONE or self.transport.is_closing():
            return
        now = self.loop.time()
        if self._phase == _HEAD:
            if self._idle and self._head_bytes == 0:  # kept alive, and nothing came since
                deadline = self._since + self.timeout_keep_alive
                if now < deadline:
                    self._arm(deadline)
                else:
                    self._phase = _DONE
                    self.transport.close()
                return
            timeout, what = self.limits.header_timeout_seconds, "headers"
        else:
            cycle = self.cycle
            if not cycle.more_body:  # the whole request is in
                if cycle.response_complete:  # answered before its body ended; on to the next
                    self._await_head(now, idle=True)
                return  # the app is answering: no deadline; the answer arms the next one
            if self.flow.read_paused:  # the app is behind, not the client
                self._since = now
            timeout, what = self.limits.body_timeout_seconds, "body"
        deadline = self._since + timeout
        if now < deadline:
            self._arm(deadline)
            return
        logger.info(
            "closed a connection from %s: no complete request %s within %g s",
            self.client[0] if self.client else "?",
            what,
            timeout,
        )
        self._phase = _DONE
        self.transport.close()

    # ------------------------------------------------------------------ refusing

    def _head_size(self) -> int:
        """The request line and headers as sent, give or take their spaces."""
        size = len(self.url) + 16  # the method, the version and the line's spaces
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        return size

    def _headers_too_large(self) -> errors.HeadersTooLarge:
        return errors.HeadersTooLarge(
            f"The request line and headers are over {self.limits.max_header_bytes} bytes "
            "(setting max_header_bytes); send fewer or shorter headers."
        )

    def _refuse_head(self) -> None:
        """Answer 431 before the headers ended: there is no request to hand an app yet."""
        self._phase = _DONE
        status, headers, body = error_response(self._headers_too_large(), new_request_id())
        lines = [STATUS_LINE[status]]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        lines += [b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(lines))
        self.transport.close()


def protocol_with(
    limits: ConnectionLimits, direct: Direct | None = None
) -> type[GatheringHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http`` option, with these limits and, when given,
    the ``direct`` start of calls (uvicorn makes a protocol per connection from the class, and
    passes it only its own config)."""
    attributes: dict[str, Any] = {"limits": limits, "answering": Answering()}
    if direct is not None:
        attributes["direct"] = staticmethod(direct)
    return type("LimitedHttpToolsProtocol", (GatheringHttpToolsProtocol,), attributes)
