"""A gateway process passes what it does not serve itself to the main server process: every
request other than an invocation (API, web UI), and invocations it cannot answer (a model or
version it holds no instance of, a refused token, a stale route). The main process answers as
if the caller had come to it directly: the caller's address travels in a header that the main
process trusts only with the gateway secret, on its private Unix socket.
"""

from __future__ import annotations

import http.cookiejar
import logging
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx

from modelhost import errors
from modelhost.gateway.app import TRUSTED, Receive, Scope, Send, new_request_id
from modelhost.gateway.auth import CHARGED, CHARGED_HEADER
from modelhost.gateway.control import FORWARDED_FOR, GATEWAY_SECRET, TRUSTED_CALL
from modelhost.gateway.envelope import error_response

logger = logging.getLogger(__name__)

#: headers that belong to one connection, not to the request or response
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        FORWARDED_FOR,
        GATEWAY_SECRET,
        TRUSTED_CALL,
        CHARGED_HEADER,  # a caller's own is never passed on; this process's is added below
    }
)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Keeps no cookie: the proxy passes each caller's own Cookie and Set-Cookie headers
    through, and a cookie jar shared by every caller would hand one user's session to the
    next."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class Proxy:
    def __init__(
        self, socket_path: str, secret: str, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        self._secret = secret.encode()
        #: headers added to every request (a call passed between processes says so)
        self._extra = list(extra)
        self._path = socket_path
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path),
            cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            base_url="http://modelhost",
            # No timeout of its own: the main process bounds every request itself (a call by
            # the model's timeout), and an upload takes as long as the caller's connection.
            timeout=None,  # noqa: S113
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, body: bytes | None = None
    ) -> None:
        """Send the request to the main process and its answer back; ``body`` when the caller's
        body was already read."""
        await self.pass_on(scope, receive, send, body)

    async def pass_on(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes | None = None,
        *,
        unreachable_ok: bool = False,
    ) -> bool:
        """As a call: with ``unreachable_ok``, a process that cannot be connected to (nothing
        was sent) answers nothing, and False says the caller is to serve the request itself."""
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        client = scope.get("client")
        if client:
            headers.append((FORWARDED_FOR, f"{client[0]}:{client[1]}".encode()))
        headers.append((GATEWAY_SECRET, self._secret))
        if scope.get(TRUSTED):  # the server's own call (the tester): trusted there too
            headers.append((TRUSTED_CALL, b"1"))
        if CHARGED in scope:  # counted against its token's limits here: not again there
            headers.append((CHARGED_HEADER, b"1"))
        headers += self._extra
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        request = self._client.build_request(
            scope["method"],
            target.decode("latin-1"),
            headers=headers,
            content=body if body is not None else _body(receive),
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.ConnectError as exc:
            if unreachable_ok:
                logger.warning("the server process at %s is not there: %r", self._path, exc)
                return False
            await self._unavailable(send, exc)
            return True
        except httpx.HTTPError as exc:
            await self._unavailable(send, exc)
            return True
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()
        return True

    async def _unavailable(self, send: Send, exc: httpx.HTTPError) -> None:
        logger.error("the server process at %s did not answer: %r", self._path, exc)
        status, response_headers, payload = error_response(
            errors.Unavailable(
                "The server is restarting or overloaded; retry in a moment.",
                headers={"Retry-After": "1"},
            ),
            new_request_id(),
        )
        start = {"type": "http.response.start", "status": status, "headers": response_headers}
        await send(start)
        await send({"type": "http.response.body", "body": payload})


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: MutableMapping[str, Any] = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
