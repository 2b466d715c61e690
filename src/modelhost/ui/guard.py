"""What every web UI response carries, and the check that a form was sent from the UI itself.

Every response under ``/ui`` says that no page may frame it (``X-Frame-Options: DENY`` and
``frame-ancestors 'none'``, against clickjacking) and that it loads scripts, styles, images and
everything else from this server only (``Content-Security-Policy``); the templates have no
inline script or style, so nothing else is needed, and nothing comes from a CDN. Every answer
but a static file is ``Cache-Control: no-store``: a signed-in user's pages are theirs alone, and
after **Sign out** the browser's Back button must not show them again from its cache.

A state-changing request (POST, PUT, PATCH, DELETE) is refused with 403 when its ``Origin``
names another site than the one it was sent to (its ``Host``, or the ``public_url`` setting's
when a reverse proxy passes another ``Host`` on), or ``null``. Without ``Origin``,
``Referer`` is checked the same way; with neither, the request passes: browsers send ``Origin``
with every cross-site POST, so only programs that are not browsers send neither. This is a
second line behind the session's CSRF token, and it covers the sign-in form, which has no
session yet.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from modelhost import errors
from modelhost.gateway.app import Receive, Scope, Send
from modelhost.gateway.envelope import error_response
from modelhost.ui import links

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; "
    "object-src 'none'"
)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
#: static files are cache-busted by their ``?v=`` hash, so they may be cached
STATIC_PREFIX = f"{links.PREFIX}/static/"
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _netloc(url: str) -> str | None:
    """``https://Example.com:8443/x`` -> ``example.com:8443``; None for ``null`` or junk."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    default = {"http": ":80", "https": ":443"}[parts.scheme]
    netloc = parts.netloc.lower().rpartition("@")[2]
    return netloc.removesuffix(default)


def foreign_origin(scope: Scope, public_url: str | None = None) -> str | None:
    """The other site a state-changing request came from, or None when it is this one's."""
    if scope.get("method") not in _UNSAFE_METHODS:
        return None
    found: dict[bytes, str] = {}
    for name, value in scope.get("headers", ()):
        if name in (b"origin", b"referer", b"host") and name not in found:
            found[name] = value.decode("latin-1")
    sender = found.get(b"origin", found.get(b"referer"))
    if sender is None:
        return None
    host = found.get(b"host", "").strip().lower()
    own = {host, host.removesuffix(":80"), host.removesuffix(":443")}
    if public_url:
        own.add(_netloc(public_url) or "")
    if _netloc(sender) in own - {""}:
        return None
    return sender[:100]


async def guarded(
    app: Any, scope: Scope, receive: Receive, send: Send, *, public_url: str | None = None
) -> None:
    """Serve a web UI request with ``app``: refused if cross-site, with the headers above."""

    private = not str(scope.get("path", "")).startswith(STATIC_PREFIX)

    async def send_with_headers(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), *HEADERS]
            if private and all(name.lower() != b"cache-control" for name, _ in headers):
                headers.append((b"cache-control", b"no-store"))
            message["headers"] = headers
        await send(message)

    sender = foreign_origin(scope, public_url)
    if sender is None:
        await app(scope, receive, send_with_headers)
        return
    state = scope.get("state") or {}
    error = errors.Forbidden(
        f"This form was sent from another site ({sender}), so it was refused. Open the page "
        "from this server's own address and send it again."
    )
    status, headers, body = error_response(error, str(state.get("request_id", "")))
    await send_with_headers({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
