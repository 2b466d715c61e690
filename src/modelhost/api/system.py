"""Health, identity and the API's front page."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

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
