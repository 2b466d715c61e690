"""Sessions and CSRF for the UI.

Signing in goes through :func:`modelhost.operations.access_control.login` (password check, throttle,
audit) and gets a fresh API key that expires with the session. The key travels only inside the
session cookie, encrypted with the server key, so every page authenticates the user exactly as
the API does, and signing out revokes the key on the server.

CSRF: a random token in its own cookie must come back in every form (``csrf_token``) and in
every state-changing ``fetch`` (``X-CSRF-Token``). Both cookies are HttpOnly and SameSite=Lax,
and Secure when the server's public URL is https.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Annotated

from fastapi import Depends, Request
from starlette.responses import Response

from modelhost import errors
from modelhost.db.repo import User
from modelhost.httpkit.deps import ServicesDep
from modelhost.operations import Services
from modelhost.operations.credentials import authenticate
from modelhost.ui import forms

SESSION_COOKIE = "mh_session"
CSRF_COOKIE = "mh_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_DAYS = 1
SESSION_KEY_NAME = "web session"
_SESSION_SECONDS = SESSION_DAYS * 24 * 3600


def is_secure(services: Services) -> bool:
    """Cookies only over https when the server is reached over https."""
    return services.settings.url.startswith("https://")


def _set_cookie(response: Response, services: Services, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        max_age=_SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        secure=is_secure(services),
        path="/",
    )


def start_session(response: Response, services: Services, api_key: str, csrf: str | None) -> None:
    payload = json.dumps({"key": api_key, "at": int(time.time())})
    _set_cookie(response, services, SESSION_COOKIE, services.key.encrypt(payload))
    if not csrf:
        set_csrf_cookie(response, services, new_csrf_token())


def session_key(request: Request, services: Services) -> str | None:
    """The API key in the request's session cookie, if the cookie is genuine and fresh."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        payload = json.loads(services.key.decrypt(raw))
    except (errors.ModelhostError, ValueError):  # forged, or from another server key
        return None
    if not isinstance(payload, dict) or time.time() - payload.get("at", 0) > _SESSION_SECONDS:
        return None
    key = payload.get("key")
    return key if isinstance(key, str) else None


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def csrf_token(request: Request) -> str | None:
    return request.cookies.get(CSRF_COOKIE)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def set_csrf_cookie(response: Response, services: Services, token: str) -> None:
    _set_cookie(response, services, CSRF_COOKIE, token)


async def check_csrf(request: Request) -> None:
    """Refuse a state-changing request whose CSRF token does not match its cookie."""
    expected = csrf_token(request)
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await forms.read(request)
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not expected or not given or not secrets.compare_digest(expected, given):
        raise errors.Forbidden(
            "This form has expired or did not come from this site (CSRF check failed); reload "
            "the page and try again."
        )


def session_user(request: Request, services: ServicesDep) -> User:
    try:
        return authenticate(services.repo, session_key(request, services))
    except errors.Unauthenticated:
        # pages redirect to the sign-in form; the JSON twin gets the 401 envelope
        raise errors.Unauthenticated("Sign in to use the web UI.") from None


SessionUser = Annotated[User, Depends(session_user)]
Csrf = Depends(check_csrf)
