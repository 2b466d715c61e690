"""Every API failure leaves in the one error envelope of :func:`modelhost.errors.error_body`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from modelhost import errors
from modelhost.gateway.app import new_request_id
from modelhost.httpkit import validation
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


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    """The one JSON error envelope (:func:`modelhost.errors.error_body`), as OpenAPI shows it."""

    error: ErrorDetail
    request_id: str


#: Errors only the Python client raises: no route answers with them.
_CLIENT_ONLY = (errors.BuildFailed, errors.ConnectionFailed)


def error_responses() -> dict[int | str, dict[str, Any]]:
    """Every status the exception tree gives an error that a route can answer, each with the
    error envelope and the codes it carries: the ``responses`` every API route documents."""
    codes: dict[int, list[str]] = {}
    for cls in errors.ERRORS_BY_CODE.values():
        if not issubclass(cls, _CLIENT_ONLY):
            codes.setdefault(cls.status, []).append(cls.code)
    return {
        status: {
            "model": ErrorEnvelope,
            "description": "The error envelope; code " + ", ".join(sorted(codes[status])) + ".",
        }
        for status in sorted(codes)
    }


#: what every API route documents besides its success (applied in app.py, one place)
ERROR_RESPONSES = error_responses()


def _openapi_without_validation_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI's OpenAPI, less the 422 it adds to routes with parameters: a request that fails
    validation is answered 400 in the error envelope (``install``), never 422."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                validation = responses.get("422", {}).get("content", {}).get("application/json")
                if validation and "HTTPValidationError" in str(validation.get("schema")):
                    del responses["422"]
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


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


def install(
    app: FastAPI,
    *,
    page: Callable[[Request, errors.ModelhostError], Response | None] | None = None,
) -> None:
    """Answer every failure in the error envelope; ``page`` may answer a no-such-route,
    method-not-allowed or similar HTTP error otherwise (the web UI's error page for a browser),
    or say None."""
    app.openapi = lambda: _openapi_without_validation_422(app)  # type: ignore[method-assign]

    @app.exception_handler(errors.ModelhostError)
    async def _modelhost_error(request: Request, exc: errors.ModelhostError) -> JSONResponse:
        if exc.status >= 500:
            logger.error("request %s failed: %s", request_id(request), exc.message)
        return envelope(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return envelope(request, validation.problem(exc, request.headers.get("content-type")))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        cls = _BY_STATUS.get(exc.status_code, errors.ModelhostError)
        message = str(exc.detail)
        unreadable = validation.unreadable_body(exc.__cause__) if exc.status_code == 400 else None
        if unreadable is not None:  # FastAPI's "There was an error parsing the body"
            message = unreadable
        elif exc.status_code == 404:
            message = f"There is no route {request.url.path}; see /api/v1/openapi.json."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        error = cls(message, headers=dict(exc.headers or {}))
        answer = page(request, error) if page is not None else None
        return answer if answer is not None else envelope(request, error)

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
