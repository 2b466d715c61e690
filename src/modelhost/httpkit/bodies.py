"""A size limit on the request body of every route but invocations (which have
``max_request_bytes`` in the gateway).

Every API and UI request's ``receive`` goes through :func:`limited`. The limit is
``max_api_body_bytes`` unless the route said otherwise with :func:`allow_body` before it read
the body: uploads raise it to the bundle limit (they go to disk as they arrive), the sign-in
form lowers it. A body over the limit gets ``413 payload_too_large`` in the error envelope:
before any of it is read when ``Content-Length`` says so, else as soon as the limit is passed.
The answer closes the connection, so the rest of the body is never read.

The limiter sends that answer itself and then raises :class:`~modelhost.errors.PayloadTooLarge`
in the route, to stop it; whatever the route sends after that is dropped. The route cannot be
trusted to answer: FastAPI turns any error while it reads a JSON body into a 400.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.requests import Request

from modelhost import errors
from modelhost.gateway.app import Receive, Scope, Send, new_request_id
from modelhost.gateway.envelope import error_response

_LIMIT = "max_body_bytes"
#: another answer than the error envelope for some requests (the web UI's error page), or None
Answer = Callable[
    [Scope, errors.ModelhostError, str], tuple[int, list[tuple[bytes, bytes]], bytes] | None
]


def allow_body(request: Request, max_bytes: int, error: errors.PayloadTooLarge) -> None:
    """This request's body may have up to ``max_bytes``, else it gets ``error``; call it
    before reading the body."""
    request.scope.setdefault("state", {})[_LIMIT] = (max_bytes, error)


def limited(
    scope: Scope, receive: Receive, send: Send, default: int, *, answer: Answer | None = None
) -> tuple[Receive, Send]:
    """``receive`` and ``send`` for a request whose body may have up to ``default`` bytes;
    ``answer`` may give the 413 another form than the error envelope."""
    received = 0
    limit = -1  # known at the first receive, when the route has had its say
    error = errors.PayloadTooLarge("")
    started = refused = False

    async def refuse(error: errors.PayloadTooLarge) -> None:
        nonlocal refused
        refused = True
        # A copy: a route may hand the same instance to every request, and raising one
        # exception object again and again grows its traceback.
        error = type(error)(error.message, headers=error.headers)
        if not started:
            request_id = scope.get("state", {}).get("request_id") or new_request_id()
            custom = answer(scope, error, request_id) if answer is not None else None
            status, headers, body = custom or error_response(error, request_id)
            headers.append((b"connection", b"close"))  # the rest of the body is never read
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        raise error

    async def receive_limited() -> MutableMapping[str, Any]:
        nonlocal received, limit, error
        if limit < 0:
            limit, error = scope.get("state", {}).get(_LIMIT) or (
                default,
                errors.PayloadTooLarge(
                    f"The request body is over {default} bytes (setting max_api_body_bytes)."
                ),
            )
            if _declared_length(scope) > limit:
                await refuse(error)
        if refused:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                await refuse(error)
        return message

    async def send_unless_refused(message: MutableMapping[str, Any]) -> None:
        nonlocal started
        if refused:
            return  # the route's own answer to the error raised in it; the 413 went out
        started = True
        await send(message)

    return receive_limited, send_unless_refused


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0  # the HTTP parser refused bad ones
    return 0
