"""``/models/{model}/openapi.json``: a model route's own OpenAPI document (see
:mod:`modelhost.operations.model_docs` for what it holds and who may read it).

These routes sit beside the invocation URLs, not under ``/api/v1``, so that a client generator
pointed at a model finds its document next to it. They are left out of the management API's
own OpenAPI document, which describes managing models, not calling them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from modelhost.gateway.auth import token_from_headers
from modelhost.httpkit.deps import ServicesDep
from modelhost.operations import Services
from modelhost.operations import model_docs as ops
from modelhost.operations.credentials import KEY_PREFIX, authenticate

router = APIRouter(tags=["model documents"])


def _document(services: Services, request: Request, model: str, route: str) -> dict[str, Any]:
    credential = token_from_headers(request.scope["headers"])
    user = None
    if credential is not None and credential.startswith(KEY_PREFIX):
        user = authenticate(services.repo, credential)
    found = ops.readable_model(services, model, user=user, token=credential)
    return ops.document(services, found, ops.resolve(services, found, route), route)


@router.get(
    "/models/{model}/openapi.json",
    summary="The OpenAPI document of the model's latest route",
    include_in_schema=False,
)
def latest_document(model: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    return _document(services, request, model, "latest")


@router.get(
    "/models/{model}/labels/{label}/openapi.json",
    summary="The OpenAPI document of a labelled route",
    include_in_schema=False,
)
def label_document(
    model: str, label: str, request: Request, services: ServicesDep
) -> dict[str, Any]:
    return _document(services, request, model, f"labels/{label}")


@router.get(
    "/models/{model}/versions/{number}/openapi.json",
    summary="The OpenAPI document of a version's route",
    include_in_schema=False,
)
def version_document(
    model: str, number: str, request: Request, services: ServicesDep
) -> dict[str, Any]:
    return _document(services, request, model, f"versions/{number}")
