"""One context, two answers: HTML from a template, or the same data as JSON.

A page answers JSON (its *JSON twin*) when the request says ``Accept: application/json``;
anything else gets HTML. Errors follow the same rule: the JSON twin gets the error envelope,
a page gets the message in plain words on an error page (or, without a session, the sign-in
form). Flash messages carry the outcome of a form across its redirect.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote

import jinja2
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import HTMLResponse, RedirectResponse, Response

from modelhost import __version__, errors
from modelhost.gateway.app import Scope
from modelhost.httpkit.errors import envelope, request_id
from modelhost.httpkit.responses import JSONResponse
from modelhost.operations import Services
from modelhost.ui import guard, links, session

logger = logging.getLogger(__name__)

FLASH_COOKIE = "mh_flash"

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("modelhost.ui", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _static_version() -> str:
    digest = hashlib.sha256(__version__.encode())
    for name in ("ui.css", "ui.js"):
        digest.update(
            resources.files("modelhost.ui").joinpath("static").joinpath(name).read_bytes()
        )
    return digest.hexdigest()[:10]


STATIC_VERSION = _static_version()
_env.globals.update(links=links, static_version=STATIC_VERSION, modelhost_version=__version__)
# JSON as text for the page to escape like any text. Jinja's own ``tojson`` is for JSON inside
# a <script>: it writes ' as \u0027, which a reader of the audit page then sees.
_env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
_env.filters["json_text"] = lambda value: json.dumps(value, sort_keys=True, ensure_ascii=False)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def render(
    request: Request,
    services: Services,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
) -> Response:
    """The page: ``context`` as JSON for its twin, else the template with it."""
    if wants_json(request):
        return JSONResponse(context, status_code=status)
    csrf = session.csrf_token(request) or session.new_csrf_token()
    flash = _read_flash(request)
    isolation = services.sandbox.status
    page = _env.get_template(template).render(
        **context,
        csrf_token=csrf,
        flash=flash,
        request_path=request.url.path,
        isolation_warning=None if isolation.isolated else isolation.reason,
    )
    response = HTMLResponse(page, status_code=status)
    if csrf != session.csrf_token(request):
        session.set_csrf_cookie(response, services, csrf)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE)
    return response


def redirect(
    services: Services, to: str, *, notice: str | None = None, error: str | None = None
) -> Response:
    """Redirect after a form (303), with a message to show on the next page."""
    response = RedirectResponse(to, status_code=303)
    if notice or error:
        value = json.dumps({"kind": "error" if error else "notice", "text": error or notice})
        response.set_cookie(
            FLASH_COOKIE,
            quote(value),
            max_age=60,
            httponly=True,
            samesite="lax",
            secure=session.is_secure(services),
        )
    return response


def _read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(unquote(raw))
    except ValueError:
        return None
    if isinstance(value, dict) and value.get("kind") in ("notice", "error"):
        return {"kind": str(value["kind"]), "text": str(value.get("text", ""))}
    return None


def error_page(request: Request, error: errors.ModelhostError) -> Response:
    if wants_json(request):
        return envelope(request, error)
    if isinstance(error, errors.Unauthenticated):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{links.sign_in()}?next={quote(target)}", status_code=303)
    page = _error_html(error, request_id(request), request.url.path)
    return HTMLResponse(page, status_code=error.status, headers=error.headers)


def _error_html(error: errors.ModelhostError, rid: str, path: str) -> str:
    message = error.message if error.public or error.status < 500 else "Something went wrong."
    return _env.get_template("error.html").render(
        status=error.status,
        message=message,
        request_id=rid,
        user=None,
        csrf_token="",
        flash=None,
        request_path=path,
    )


def _wants_page(path: str, accept: str) -> bool:
    """A browser's request for a page of the UI (not its JSON twin, not an API call)."""
    return (
        path.startswith(links.PREFIX + "/")
        and "text/html" in accept
        and "application/json" not in accept
    )


def browser_error(request: Request, error: errors.ModelhostError) -> Response | None:
    """The UI's error page, in words, for an error the app answers before any UI route runs
    (no such page, a method the address does not take), when a browser asked for a page under
    ``/ui/``; None for everyone else, who get the error envelope."""
    if not _wants_page(request.url.path, request.headers.get("accept", "")):
        return None
    path = request.url.path
    if isinstance(error, errors.NotFound):
        error = type(error)(
            f"There is no page {path} in the web UI; the models are at {links.models()}.",
            headers=error.headers,
        )
    elif isinstance(error, errors.MethodNotAllowed) and error.headers.get("Allow") == "POST":
        error = type(error)(
            f"{path} is where a form is sent, not a page to open; go back to the page and "
            "send the form again.",
            headers=error.headers,
        )
    return error_page(request, error)


def body_limit_answer(
    scope: Scope, error: errors.ModelhostError, rid: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
    """What the body limiter (``httpkit.bodies``) answers a browser's form that is too large:
    the UI's error page with the UI's headers, or None for the error envelope."""
    path = str(scope.get("path", ""))
    accept = next(
        (value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"accept"),
        "",
    )
    if not _wants_page(path, accept):
        return None
    body = _error_html(error, rid, path).encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
        *guard.HEADERS,
        (b"cache-control", b"no-store"),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    return error.status, headers, body


def _invalid_parameter(request: Request, exc: RequestValidationError) -> errors.ModelhostError:
    """A value in the URL that the route cannot read (``versions/abc``, ``?version=abc``): a 404
    when it is a part of the path (it names something that cannot exist), else a 400; both name
    the parameter and what it should be."""
    in_path: list[str] = []
    reasons: list[str] = []
    for item in exc.errors():
        where, *rest = item.get("loc", ()) or ("request",)
        name = ".".join(str(part) for part in rest) or str(where)
        given = item.get("input")
        value = given if isinstance(given, str | int | float) else "…"
        reason = str(item.get("msg", "it is not valid")).rstrip(".")
        if where == "path":
            in_path.append(f"its {{{name}}} part, '{value}', is not valid ({reason})")
        else:
            reasons.append(f"The {where} parameter {name}={value} is not valid: {reason}.")
    if in_path:
        return errors.NotFound(f"There is no page {request.url.path}: " + "; ".join(in_path) + ".")
    return errors.BadRequest(" ".join(reasons))


class UIRoute(APIRoute):
    """Routes of the UI: a modelhost error becomes an error page (or the envelope for JSON)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except errors.ModelhostError as exc:
                if exc.status >= 500:
                    logger.error("UI request %s failed: %s", request_id(request), exc.message)
                return error_page(request, exc)
            except RequestValidationError as exc:
                return error_page(request, _invalid_parameter(request, exc))
            except Exception as exc:  # a bug: logged with its traceback, shown as a 500 page
                logger.exception("UI request %s failed", request_id(request))
                return error_page(request, errors.InternalError(type(exc).__name__))

        return handle
