"""The lean request cycle of invocation requests (``gateway/cycle.py``), on a real uvicorn server
with modelhost's HTTP protocol, talked to over raw sockets: it must keep HTTP/1.1 as uvicorn's own
cycle does (keep-alive, bodies in pieces, chunked answers, pipelining, failures), and every other
request must keep uvicorn's cycle.

The app stands in for the gateway; what it does depends on the model name in the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from modelhost.gateway.cycle import RESPOND, InvocationCycle
from modelhost.gateway.limits import ConnectionLimits
from modelhost.gateway.transport import protocol_with

#: the kind of cycle each request got, by its path
CYCLES: dict[str, str] = {}


async def _body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    CYCLES[path] = type(receive.__self__).__name__
    kind = path.split("/")[2] if path.startswith("/models/") else "api"
    if kind == "fails":
        raise RuntimeError("the app failed")
    if kind == "silent":
        return
    body = await _body(receive)
    if kind == "slow":
        await asyncio.sleep(0.2)
    if kind == "disconnect":
        message = await receive()  # after the body: waits until the client goes
        CYCLES["disconnect-message"] = message["type"]
        return
    if kind == "stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if kind.startswith("respond"):  # the gateway's way: the whole answer in one call
        respond = scope[RESPOND]
        answer = b"respond:" + body
        if kind == "respond-late":  # a response already begun goes on with send
            await send({"type": "http.response.start", "status": 200, "headers": []})
            CYCLES["respond-late"] = str(respond(200, [], answer))
            await send({"type": "http.response.body", "body": answer})
            return
        sized = [] if kind == "respond-unsized" else [(b"content-length", b"%d" % len(answer))]
        assert respond(201, [(b"x-answer", b"direct"), *sized], answer) is True
        return
    headers = [(b"content-length", str(len(body) + len(kind) + 1).encode())]
    if kind == "split":
        headers.append((b"x-evil", b"1\r\nset-cookie: stolen=1"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": kind.encode() + b":" + body})


#: what the direct start was asked: the kind of call and the size of its body
DIRECT: list[tuple[str, int]] = []


def _direct(scope: Any, cycle: InvocationCycle, run: Any) -> bool:
    """Stands in for Gateway.direct: ``started`` calls are answered a moment later without a
    task, ``handed`` ones go on in the app (as a started call that failed does), the rest are
    declined."""
    kind = scope["path"].split("/")[2]
    DIRECT.append((kind, len(cycle.body)))
    loop = asyncio.get_running_loop()
    if kind == "started":
        answer = b"started:" + cycle.body
        headers = [(b"content-length", b"%d" % len(answer))]
        loop.call_later(0.05, cycle.respond, 200, headers, answer)
        return True
    if kind == "handed":
        loop.call_later(0.05, run, app)
        return True
    if kind == "raises":
        raise RuntimeError("a bug in the direct start")
    if kind == "held":  # answered when the test says so
        HELD.append((loop, cycle))
        return True
    return False


#: calls the direct start holds, with their loop
HELD: list[tuple[asyncio.AbstractEventLoop, InvocationCycle]] = []


@contextlib.contextmanager
def _serving(direct: Any = None, protocol: Any = None, **options: Any) -> Iterator[int]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        loop="uvloop",
        http=protocol or protocol_with(ConnectionLimits(), direct),
        lifespan="off",
        log_level="critical",
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with _serving() as serving:
        yield serving


def _request(path: str, body: bytes = b"{}", extra: str = "", method: str = "POST") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


class Reader:
    """Responses one after another from one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            assert self._more(), f"closed before a response; got {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"header {name} twice: {lines}"
            headers[name.lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            return status, headers, self._chunked()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert self._more(), "closed in the body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def _chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buffer:
                assert self._more()
            size_line, _, self.buffer = self.buffer.partition(b"\r\n")
            size = int(size_line, 16)
            while len(self.buffer) < size + 2:
                assert self._more()
            body += self.buffer[:size]
            self.buffer = self.buffer[size + 2 :]
            if size == 0:
                return body

    def closed(self) -> bool:
        return not self.buffer and not self._more()


def test_calls_on_one_connection_are_answered_one_after_another_and_it_stays_open(
    port: int,
) -> None:
    with _connect(port) as sock:
        reader = Reader(sock)
        for n in range(3):
            sock.sendall(_request("/models/echo/latest/model", f'{{"n":{n}}}'.encode()))
            status, headers, body = reader.response()
            assert (status, body) == (200, f'echo:{{"n":{n}}}'.encode())
            assert headers["content-length"] == str(len(body))
            assert "connection" not in headers
            assert "date" in headers  # uvicorn's default headers are kept
    assert CYCLES["/models/echo/latest/model"] == InvocationCycle.__name__


def test_a_body_sent_in_pieces_reaches_the_app_whole(port: int) -> None:
    body = b'{"data": {"text": "' + b"x" * 200_000 + b'"}}'
    request = _request("/models/echo/versions/2/model", body)
    with _connect(port) as sock:
        for start in range(0, len(request), 7_000):
            sock.sendall(request[start : start + 7_000])
        status, _, answer = Reader(sock).response()
    assert (status, answer) == (200, b"echo:" + body)


def test_an_answer_streamed_without_a_length_is_sent_chunked(port: int) -> None:
    with _connect(port) as sock:
        reader = Reader(sock)
        sock.sendall(_request("/models/stream/latest/model"))
        status, headers, body = reader.response()
        assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"one,two,three")
        sock.sendall(_request("/models/echo/latest/model"))  # and the connection goes on
        assert reader.response()[2] == b"echo:{}"


def test_pipelined_requests_are_answered_in_the_order_they_came(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(
            _request("/models/slow/latest/model", b"1")
            + _request("/models/echo/latest/model", b"2")
            + _request("/api/anything", b"3")
            + _request("/models/echo/labels/prod/model", b"4")
        )
        reader = Reader(sock)
        answers = [reader.response()[2] for _ in range(4)]
    assert answers == [b"slow:1", b"echo:2", b"api:3", b"echo:4"]


def test_an_app_that_fails_before_answering_gets_a_500_and_the_connection_closes(
    port: int,
) -> None:
    for name in ("fails", "silent"):
        with _connect(port) as sock:
            sock.sendall(_request(f"/models/{name}/latest/model"))
            reader = Reader(sock)
            status, headers, body = reader.response()
            assert (status, body, headers["connection"]) == (500, b"Internal Server Error", "close")
            assert reader.closed()


def test_a_header_value_with_a_line_break_is_never_written(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(_request("/models/split/latest/model"))
        reader = Reader(sock)
        assert reader.closed()  # no response at all rather than a split one
        assert b"stolen" not in reader.buffer


def test_a_client_that_asks_to_close_gets_its_answer_and_then_the_close(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(_request("/models/echo/latest/model", extra="connection: close\r\n"))
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert (status, body, headers["connection"]) == (200, b"echo:{}", "close")
        assert reader.closed()


def test_a_receive_after_the_body_returns_when_the_client_goes(port: int) -> None:
    CYCLES.pop("disconnect-message", None)
    sock = _connect(port)
    sock.sendall(_request("/models/disconnect/latest/model"))
    deadline = time.monotonic() + 10
    while "/models/disconnect/latest/model" not in CYCLES:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sock.close()
    while "disconnect-message" not in CYCLES:
        assert time.monotonic() < deadline, "receive never saw the client go"
        time.sleep(0.01)
    assert CYCLES["disconnect-message"] == "http.disconnect"


@pytest.mark.parametrize(
    ("path", "method", "extra"),
    [
        ("/api/models", "POST", ""),  # not an invocation
        ("/models/echo/latest/model", "PUT", ""),  # not a POST
        ("/models/echo/latest/model?x=1%20", "POST", ""),  # a query is fine, but decoded
        ("/models/e%63ho/latest/model", "POST", ""),  # an escaped path: uvicorn decodes it
        ("/models/echo/latest/model/openapi.json", "POST", ""),  # a model's document
        ("/models/echo/versions/1/model", "POST", "expect: 100-continue\r\n"),
    ],
)
def test_every_other_request_keeps_uvicorn_s_cycle_and_is_answered(
    port: int, path: str, method: str, extra: str
) -> None:
    with _connect(port) as sock:
        sock.sendall(_request(path, b"{}", extra, method))
        reader = Reader(sock)
        if extra:
            assert reader.response()[0] == 100
        status, _, body = reader.response()
    decoded = path.replace("%63", "c").partition("?")[0]
    assert status == 200
    assert body.endswith(b":{}")
    expected = "RequestResponseCycle"
    if path.endswith("?x=1%20"):
        expected = InvocationCycle.__name__  # only the path decides; the query is passed as is
    assert CYCLES[decoded] == expected


def test_a_connection_idle_after_an_answer_is_closed_after_the_keep_alive_timeout() -> None:
    with _serving(timeout_keep_alive=1) as port, _connect(port) as sock:
        reader = Reader(sock)
        sock.sendall(_request("/models/echo/latest/model"))
        assert reader.response()[2] == b"echo:{}"
        answered = time.monotonic()
        sock.settimeout(30)  # the header timeout (10 s) must not be what closes it
        assert reader.closed()
        assert time.monotonic() - answered < 8


def test_a_connection_that_keeps_calling_is_not_closed_by_the_keep_alive_timeout() -> None:
    with _serving(timeout_keep_alive=1) as port, _connect(port) as sock:
        reader = Reader(sock)
        started = time.monotonic()
        calls = 0
        while time.monotonic() - started < 2.5:  # past two keep-alive timeouts
            sock.sendall(_request("/models/echo/latest/model"))
            assert reader.response()[2] == b"echo:{}"
            calls += 1
        assert calls > 1


def test_an_answer_given_whole_through_respond_keeps_the_connection_going(port: int) -> None:
    with _connect(port) as sock:
        reader = Reader(sock)
        for kind, body in (("respond", b'{"n":1}'), ("respond-unsized", b"2"), ("echo", b"3")):
            sock.sendall(_request(f"/models/{kind}/latest/model", body))
            status, headers, answer = reader.response()
            if kind == "echo":
                assert (status, answer) == (200, b"echo:3")
                continue
            assert (status, answer, headers["x-answer"]) == (201, b"respond:" + body, "direct")
            assert "date" in headers  # uvicorn's default headers, as with send
            if kind == "respond-unsized":
                assert headers["transfer-encoding"] == "chunked"


def test_respond_declines_once_a_response_began_and_send_finishes_it(port: int) -> None:
    with _connect(port) as sock:
        reader = Reader(sock)
        sock.sendall(_request("/models/respond-late/latest/model", b"x"))
        status, headers, answer = reader.response()
        assert (status, headers["transfer-encoding"], answer) == (200, "chunked", b"respond:x")
    assert CYCLES["respond-late"] == "False"


@pytest.fixture(scope="module")
def direct_port() -> Iterator[int]:
    with _serving(direct=_direct) as serving:
        yield serving


def test_a_call_started_directly_is_answered_without_the_app_and_the_connection_goes_on(
    direct_port: int,
) -> None:
    with _connect(direct_port) as sock:
        reader = Reader(sock)
        for n in range(3):
            sock.sendall(_request("/models/started/latest/model", f'{{"n":{n}}}'.encode()))
            assert reader.response()[:3:2] == (200, f'started:{{"n":{n}}}'.encode())
        sock.sendall(_request("/models/echo/latest/model", b"declined"))
        assert reader.response()[2] == b"echo:declined"  # the app answers what it declines
    assert "/models/started/latest/model" not in CYCLES
    assert ("started", 7) in DIRECT
    assert ("echo", 8) in DIRECT


def test_the_direct_start_gets_the_whole_body_sent_in_pieces(direct_port: int) -> None:
    body = b'{"data": "' + b"y" * 20_000 + b'"}'
    request = _request("/models/started/versions/1/model", body)
    with _connect(direct_port) as sock:
        for start in range(0, len(request), 3_000):
            sock.sendall(request[start : start + 3_000])
            time.sleep(0.001)
        assert Reader(sock).response()[2] == b"started:" + body
    assert ("started", len(body)) in DIRECT


def test_a_body_over_the_read_limit_goes_to_the_app_while_it_is_still_coming(
    direct_port: int,
) -> None:
    body = b'{"data": "' + b"z" * 300_000 + b'"}'
    request = _request("/models/started/labels/big/model", body)
    with _connect(direct_port) as sock:
        for start in range(0, len(request), 50_000):
            sock.sendall(request[start : start + 50_000])
        assert Reader(sock).response()[2] == b"started:" + body  # the app's answer, same form
    assert CYCLES["/models/started/labels/big/model"] == InvocationCycle.__name__
    assert ("started", len(body)) not in DIRECT


def test_a_started_call_handed_to_the_app_is_answered_there_with_its_body(
    direct_port: int,
) -> None:
    with _connect(direct_port) as sock:
        sock.sendall(_request("/models/handed/latest/model", b'{"x":1}'))
        assert Reader(sock).response()[:3:2] == (200, b'handed:{"x":1}')


def test_requests_pipelined_behind_a_direct_call_are_answered_in_the_order_they_came(
    direct_port: int,
) -> None:
    with _connect(direct_port) as sock:
        sock.sendall(
            _request("/models/started/latest/model", b"1")
            + _request("/models/echo/latest/model", b"2")
            + _request("/models/started/latest/model", b"3")
        )
        reader = Reader(sock)
        answers = [reader.response()[2] for _ in range(3)]
    assert answers == [b"started:1", b"echo:2", b"started:3"]


def test_a_direct_start_that_raises_leaves_the_call_to_the_app_not_a_400(
    direct_port: int,
) -> None:
    with _connect(direct_port) as sock:
        reader = Reader(sock)
        sock.sendall(_request("/models/raises/latest/model", b"1"))
        assert reader.response()[:3:2] == (200, b"raises:1")
        sock.sendall(_request("/models/started/latest/model", b"2"))  # the connection goes on
        assert reader.response()[2] == b"started:2"


def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_calls_are_counted_as_being_answered_from_their_head_to_their_answer() -> None:
    protocol = protocol_with(ConnectionLimits(), _direct)
    answering = protocol.answering
    HELD.clear()
    with _serving(protocol=protocol) as serving, _connect(serving) as one, _connect(serving) as two:
        one.sendall(_request("/models/held/latest/model", b"1"))
        two.sendall(_request("/models/held/latest/model", b"2"))
        _until(lambda: len(HELD) == 2, "both calls reached the direct start")
        assert answering.calls == 2
        (loop, first), (_, second) = HELD
        answer = [(b"content-length", b"5")]
        # Answered while the other call is still being answered: the write waits for the end
        # of the loop's turn, and still arrives whole.
        loop.call_soon_threadsafe(first.respond, 200, answer, b"first")
        assert Reader(one if first.body == b"1" else two).response()[:3:2] == (200, b"first")
        _until(lambda: answering.calls == 1, "the answered call is no longer counted")
        loser = two if first.body == b"1" else one
        loser.close()  # the other caller goes away before its answer
        _until(lambda: answering.calls == 0, "a call whose caller left is no longer counted")
        assert second.disconnected
        with _connect(serving) as three:  # the only call: answered at once
            three.sendall(_request("/models/started/latest/model", b"3"))
            assert Reader(three).response()[2] == b"started:3"
        _until(lambda: answering.calls == 0, "the last call is no longer counted")
