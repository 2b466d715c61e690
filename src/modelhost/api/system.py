"""Health, identity and the API's front page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse

from modelhost import __version__, urls
from modelhost.httpkit.deps import ServicesDep, UserDep

router = APIRouter(tags=["system"])


@router.get(urls.HEALTH, summary="Liveness: the server answers")
def health(services: ServicesDep) -> dict[str, Any]:
    """``isolation`` says whether user code runs sandboxed (see docs/security.md)."""
    return {
        "status": "ok",
        "version": __version__,
        "isolation": services.sandbox.status.as_dict(),
    }


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


@router.get(f"{urls.API}/me", summary="The user the API key belongs to")
def me(user: UserDep) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "is_admin": user.is_admin}
