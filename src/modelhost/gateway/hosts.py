"""Only the host names this server answers to: a guard against DNS rebinding.

A web page on another site can point its own host name at 127.0.0.1 and then talk to a server
on the visitor's machine as if it were the same site; its requests still carry that other name
in ``Host``. :class:`HostGuard` wraps the whole ASGI app (API, web UI and invocation URLs, in the
main process and in every gateway process) and answers a request whose ``Host`` is not allowed
with 400 and the error envelope. The names come from the ``allowed_hosts`` setting; ``*`` allows
any. A port in the header is ignored, and a request with no ``Host`` at all (HTTP/1.0) passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from modelhost import errors
from modelhost.gateway.app import Receive, Run, Scope, Send, new_request_id
from modelhost.gateway.cycle import InvocationCycle
from modelhost.gateway.envelope import error_response

if TYPE_CHECKING:
    from modelhost.gateway.transport import Direct

ANY = "*"
#: always allowed unless allowed_hosts is given explicitly
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")


def host_name(value: str) -> str:
    """``Example.com:8000`` -> ``example.com``; ``[::1]:8000`` and ``::1`` -> ``[::1]``."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end != -1 else value
    if value.count(":") > 1:  # a bare IPv6 address, as the host setting may hold one
        return f"[{value}]"
    return value.partition(":")[0].rstrip(".")


class HostGuard:
    """The ASGI app ``app``, for requests whose ``Host`` is one of ``allowed``."""

    def __init__(self, app: Any, allowed: Iterable[str]) -> None:
        self.app = app
        names = tuple(allowed)
        self.any = ANY in names
        self.allowed = frozenset(host_name(n) for n in names if n != ANY)
        self._seen: dict[bytes, bool] = {}  # header value -> allowed, for the hot path

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        # Not a coroutine itself, like the app it wraps: one layer less per call.
        if self.any or scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)
        if scope.get("client") is None:
            # Over the private Unix socket: another of the server's processes passed it on,
            # and checked its host already (the tester's own calls have none).
            return self.app(scope, receive, send)
        host = next((v for k, v in scope.get("headers", ()) if k == b"host"), None)
        if host is None or self._allows(host):
            return self.app(scope, receive, send)
        return self._refuse(host, scope, send)

    def direct(self, start: Direct) -> Direct:
        """``start`` (``Gateway.direct``) for requests whose host this guard lets through; the
        others get False, and the app (this guard first) refuses them as usual."""

        def guarded(scope: Scope, cycle: InvocationCycle, run: Run) -> bool:
            if not self.any:
                for name, value in scope["headers"]:
                    if name == b"host":
                        if not self._allows(value):
                            return False
                        break
            return start(scope, cycle, run)

        return guarded

    def _allows(self, host: bytes) -> bool:
        known = self._seen.get(host)
        if known is None:
            known = host_name(host.decode("latin-1")) in self.allowed
            if len(self._seen) < 1024:  # a flood of made-up names cannot grow it without end
                self._seen[host] = known
        return known

    async def _refuse(self, host: bytes, scope: Scope, send: Send) -> None:
        shown = host.decode("latin-1")[:100]
        error = errors.BadRequest(
            f"This server does not answer to the host name '{shown}'. If it should, add the "
            "name to the server setting allowed_hosts (MODELHOST_ALLOWED_HOSTS; '*' allows any) "
            "or set public_url to the URL clients use."
        )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        status, headers, body = error_response(error, new_request_id())
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
