"""``/models/{model}/openapi.json``: a model route's own OpenAPI document (see
:mod:`modelhost.operations.model_docs` for what it holds and who may read it).

These routes sit beside the invocation URLs, not under ``/api/v1``, so that a client generator
pointed at a model finds its document next to it. They are left out of the management API's
own OpenAPI document, which describes managing models, not calling them.

A batching version's document (:func:`document`) describes what one call sends and gets: one
input, which the function gets as one element of its list, and that call's own result; the
operation carries the version's limits as ``x-modelhost-batch``. The UI's docs page renders the
same document.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from modelhost.db.repo import Model, Version
from modelhost.gateway.auth import token_from_headers
from modelhost.httpkit.deps import ServicesDep
from modelhost.operations import Services
from modelhost.operations import model_docs as ops
from modelhost.operations.credentials import KEY_PREFIX, authenticate

router = APIRouter(tags=["model documents"])

#: the operation's extension with a batching version's limits, {"max_size", "max_wait_ms"}
BATCH = "x-modelhost-batch"


def document(services: Services, model: Model, version: Version, route: str) -> dict[str, Any]:
    """The OpenAPI document of ``route`` of ``model``, typed from ``version``; for a batching
    version, its request forms, result and 400 in the words of one call."""
    found = ops.document(services, model, version, route)
    if version.batch_max_size is not None:
        _one_call_of_a_batch(found, version)
    return found


def _one_call_of_a_batch(document: dict[str, Any], version: Version) -> None:
    """Describe one call to a batching function (docs/api.md, "Batching functions"): its body
    is one input, any ``data`` object or ``parameters`` array, which the function gets as one
    element of its list of inputs; its ``result`` is that input's own result."""
    function = version.function
    r = version.environment_runtime == "r"
    data_kind = "an R named list" if r else "a dict"
    list_kind = "an R list" if r else "a list"
    one_of = f"as one element of its list of inputs (at most {version.batch_max_size} a batch)"
    schemas = document["components"]["schemas"]
    schemas[ops.REQUEST_DATA] = {
        "type": "object",
        "title": "One input as a data object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "description": f"One call's input: `{function}` gets this object "
                f"({data_kind}) {one_of}.",
                "additionalProperties": {},
            }
        },
    }
    schemas[ops.REQUEST_PARAMETERS] = {
        "type": "object",
        "title": "One input as a parameters array",
        "required": ["parameters"],
        "properties": {
            "parameters": {
                "type": "array",
                "description": f"One call's input: `{function}` gets this array "
                f"({list_kind}) {one_of}.",
                "items": {},
            }
        },
    }
    schemas[ops.RESPONSE]["properties"]["result"]["description"] = (
        f"This call's own result: its element of the list `{function}` returned"
        + (" (or its row of the data frame, as an object)." if r else ".")
    )
    operation = next(iter(document["paths"].values()))["post"]
    operation[BATCH] = {
        "max_size": version.batch_max_size,
        "max_wait_ms": version.batch_max_wait_ms,
    }
    words = (
        f"`{function}` is a batching function: each call sends one input, as "
        '{"data": {...}} or {"parameters": [...]}, not both. '
        f"`{function}` gets this call's data object ({data_kind}) or parameters array "
        f"({list_kind}) {one_of}, and the answer's result is this call's own result."
    )
    paragraphs = operation["description"].split("\n\n")
    operation["description"] = "\n\n".join(
        words if paragraph.startswith("Send keyword arguments") else paragraph
        for paragraph in paragraphs
    )
    operation["responses"]["400"]["description"] = (
        "The body is not JSON, or is not one input: a 'data' object or a 'parameters' "
        "array, not both."
    )
    example = operation["requestBody"]["content"]["application/json"].get("examples")
    if example:
        example["example"]["summary"] = (
            f"One call's input: the example input of version {version.number}"
        )


def _document(services: Services, request: Request, model: str, route: str) -> dict[str, Any]:
    credential = token_from_headers(request.scope["headers"])
    user = None
    if credential is not None and credential.startswith(KEY_PREFIX):
        user = authenticate(services.repo, credential)
    found = ops.readable_model(services, model, user=user, token=credential)
    return document(services, found, ops.resolve(services, found, route), route)


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
