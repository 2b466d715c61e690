"""Every API failure leaves in the one error envelope of :func:`modelhost.errors.error_body`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException

from modelhost import errors
from modelhost.gateway.app import new_request_id
from modelhost.httpkit.responses import JSONResponse

logger = logging.getLogger(__name__)

_BY_STATUS: dict[int, type[errors.ModelhostError]] = {
    400: errors.BadRequest,
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def request_id(request: Request) -> str:
    if not hasattr(request.state, "request_id"):
        request.state.request_id = new_request_id()
    return request.state.request_id


def envelope(request: Request, error: errors.ModelhostError) -> JSONResponse:
    rid = request_id(request)
    headers = {"X-Request-Id": rid, **error.headers}
    if isinstance(error, errors.Unauthenticated):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="modelhost"')
    return JSONResponse(errors.error_body(error, rid), status_code=error.status, headers=headers)


#: how long a client should wait before it asks again while the database is unreachable
DATABASE_RETRY_SECONDS = 5


def database_unavailable(request: Request, exc: DBAPIError) -> errors.Unavailable:
    """What a management call answers while the database cannot be reached (or, for SQLite,
    stays locked): a 503 to retry, not a 500. Calls to models need no database and go on."""
    why = " ".join(str(exc.orig).split()) if exc.orig is not None else type(exc).__name__
    logger.warning("request %s: the database is unavailable: %s", request_id(request), why)
    return errors.Unavailable(
        "The database is unavailable right now, so the management API cannot answer; calls "
        f"to models go on. Retry in {DATABASE_RETRY_SECONDS} s.",
        headers={"Retry-After": str(DATABASE_RETRY_SECONDS)},
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", ""))
    return "Invalid request: " + "; ".join(parts) + "."


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.ModelhostError)
    async def _modelhost_error(request: Request, exc: errors.ModelhostError) -> JSONResponse:
        if exc.status >= 500:
            logger.error("request %s failed: %s", request_id(request), exc.message)
        return envelope(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return envelope(request, errors.BadRequest(_describe_validation(exc)))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        cls = _BY_STATUS.get(exc.status_code, errors.ModelhostError)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"There is no route {request.url.path}; see /api/v1/openapi.json."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        error = cls(message, headers=dict(exc.headers or {}))
        return envelope(request, error)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if not (isinstance(exc, OperationalError) or exc.connection_invalidated):
            return await _unexpected(request, exc)
        return envelope(request, database_unavailable(request, exc))

    @app.exception_handler(UnicodeEncodeError)
    async def _not_unicode(request: Request, exc: UnicodeEncodeError) -> JSONResponse:
        if exc.reason != "surrogates not allowed":
            return await _unexpected(request, exc)
        # JSON can spell a lone UTF-16 surrogate (\ud800), which no database or file can store.
        return envelope(
            request,
            errors.BadRequest(
                "The request holds text that is not valid Unicode (a lone surrogate such as "
                "\\ud800); send valid UTF-8 text."
            ),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request %s failed", request_id(request))
        return envelope(request, errors.InternalError(str(exc)))
