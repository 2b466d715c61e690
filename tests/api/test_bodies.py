"""The body limit on every API and UI route (``httpkit/bodies.py``), driven with a fake client."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest
from starlette.requests import Request

from modelhost import errors
from modelhost.httpkit.bodies import allow_body, limited

pytestmark = pytest.mark.anyio


class Client:
    """The client side of one request: the chunks it would send, and what it was sent."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.read = 0
        self.sent: list[MutableMapping[str, Any]] = []

    async def receive(self) -> MutableMapping[str, Any]:
        self.read += 1
        body = self.chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)


def _scope(length: int | None = None) -> dict[str, Any]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http", "headers": headers, "state": {"request_id": "RID"}}


def _answer(client: Client) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
    start, body = client.sent
    return start["status"], json.loads(body["body"]), dict(start["headers"])


async def test_a_declared_length_over_the_limit_gets_413_before_any_body_is_read() -> None:
    client = Client([b"x" * 10])
    receive, _send = limited(_scope(length=100_000_000), client.receive, client.send, 1000)
    with pytest.raises(errors.PayloadTooLarge):
        await receive()
    assert client.read == 0
    status, body, headers = _answer(client)
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    assert body["request_id"] == "RID"
    assert headers[b"connection"] == b"close"


async def test_a_body_without_length_gets_413_on_the_chunk_that_passes_the_limit() -> None:
    client = Client([b"x" * 600, b"x" * 600, b"x" * 600])
    receive, _send = limited(_scope(), client.receive, client.send, 1000)
    assert (await receive())["body"] == b"x" * 600
    with pytest.raises(errors.PayloadTooLarge):
        await receive()
    assert client.read == 2  # the third chunk is never asked for
    assert _answer(client)[0] == 413


async def test_what_the_route_sends_after_the_413_is_dropped() -> None:
    client = Client([b"x" * 2000])
    receive, send = limited(_scope(), client.receive, client.send, 1000)
    with pytest.raises(errors.PayloadTooLarge):
        await receive()
    await send({"type": "http.response.start", "status": 400, "headers": []})
    assert len(client.sent) == 2
    assert _answer(client)[0] == 413
    assert await receive() == {"type": "http.disconnect"}


async def test_a_route_that_allows_more_gets_its_own_limit_and_error() -> None:
    scope = _scope(length=5000)
    allow_body(Request(scope), 10_000, errors.BundleTooLarge("too big for an upload"))
    client = Client([b"x" * 5000])
    receive, _send = limited(scope, client.receive, client.send, 1000)
    assert (await receive())["body"] == b"x" * 5000

    scope = _scope(length=20_000)
    allow_body(Request(scope), 10_000, errors.BundleTooLarge("too big for an upload"))
    client = Client([b"x"])
    receive, _send = limited(scope, client.receive, client.send, 1000)
    with pytest.raises(errors.BundleTooLarge):
        await receive()
    assert _answer(client)[1]["error"] == {
        "code": "bundle_too_large",
        "message": "too big for an upload",
    }


async def test_a_body_within_the_limit_passes_unchanged() -> None:
    client = Client([b"a" * 500, b"b" * 500])
    receive, send = limited(_scope(length=1000), client.receive, client.send, 1000)
    assert (await receive())["body"] == b"a" * 500
    assert await receive() == {"type": "http.request", "body": b"b" * 500, "more_body": False}
    await send({"type": "http.response.start", "status": 200, "headers": []})
    assert client.sent == [{"type": "http.response.start", "status": 200, "headers": []}]
