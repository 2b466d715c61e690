"""Health, identity and the API's front page."""

from __future__ import annotations

import hmac
from importlib import resources
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import RedirectResponse, Response

from modelhost import __version__, errors, urls
from modelhost.httpkit.deps import ServicesDep, UserDep
from modelhost.operations.credentials import KEY_PREFIX, authenticate

router = APIRouter(tags=["system"])


@router.get(
    urls.HEALTH,
    summary="Health: 200 while the server takes traffic, 503 once it is stopping",
    responses={
        503: {
            "description": "The server is stopping: take it out of rotation. The body is the "
            "health report (not the error envelope), with ready false.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["status", "ready", "leader", "version", "isolation"],
                        "properties": {
                            "status": {"const": "draining"},
                            "ready": {"const": False},
                            "leader": {"type": "boolean"},
                            "version": {"type": "string"},
                            "isolation": {"type": "object"},
                        },
                    }
                }
            },
        }
    },
)
def health(services: ServicesDep) -> Response:
    """``ready`` is false (and the status 503) once the server was asked to stop and drains;
    ``leader`` says whether it runs the singletons (scheduler, runs, the reconciler's shared
    writes): with several servers on one PostgreSQL database, the one holding the leader lock;
    ``isolation`` says whether user code runs sandboxed."""
    ready = not services.state.draining
    body = {
        "status": "ok" if ready else "draining",
        "ready": ready,
        "leader": services.leading(),
        "version": __version__,
        "isolation": services.sandbox.status.as_dict(),
    }
    return Response(
        orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json"
    )


#: the classic text format, which every Prometheus reads (the names here need nothing newer)
_TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
_bearer = HTTPBearer(auto_error=False, description="An admin's API key or the metrics token")


@router.get(
    urls.METRICS,
    summary="Prometheus metrics (text format): admins' API keys or the metrics token",
    response_class=Response,
)
def prometheus_metrics(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
    """Calls, latency, load, instances and builds per model and version (docs/api.md)."""
    given = credentials.credentials if credentials else None
    token = services.settings.metrics_token
    if not (token and given and hmac.compare_digest(given.encode(), token.encode())):
        if not given:
            raise errors.Unauthenticated(
                "/metrics needs an admin's API key or the metrics token (setting "
                "metrics_token): send 'Authorization: Bearer ...'."
            )
        if not given.startswith(KEY_PREFIX):
            raise errors.Unauthenticated(
                "That is neither the metrics token (setting metrics_token) nor a modelhost API key."
            )
        user = authenticate(services.repo, given)
        if not user.is_admin:
            raise errors.Forbidden(
                f"Only admins may read /metrics; '{user.username}' is not one. Use an admin's "
                "API key or the metrics token (setting metrics_token)."
            )
    return Response(services.scrape(), media_type=_TEXT_FORMAT)


@router.get("/", summary="What this server is and where its API lives", include_in_schema=False)
def index(request: Request) -> Any:
    if "text/html" in request.headers.get("accept", ""):  # a browser: the web UI
        return RedirectResponse("/ui/", status_code=303)
    return {
        "name": "modelhost",
        "version": __version__,
        "api": urls.API,
        "openapi": urls.OPENAPI,
        "invoke": "POST /models/{model}/latest/model",
    }


#: the web UI's icon, which browsers ask for at /favicon.ico: served from the package, no CDN
_FAVICON = resources.files("modelhost.ui").joinpath("static").joinpath("favicon.ico").read_bytes()


@router.get(urls.FAVICON, summary="The web UI's icon", include_in_schema=False)
def favicon() -> Response:
    return Response(
        _FAVICON,
        media_type="image/vnd.microsoft.icon",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.get(f"{urls.API}/me", summary="The user the API key belongs to")
def me(user: UserDep) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "is_admin": user.is_admin}
