"""``/api/v1/models``: models, versions (publish), instances and logs."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import Field
from starlette.responses import Response

from modelhost.api.request_body import RequestBody
from modelhost.httpkit.deps import ServicesDep, UserDep
from modelhost.httpkit.tester import tester_call
from modelhost.httpkit.uploads import check_archive_type, received_archive
from modelhost.operations import metrics as metrics_ops
from modelhost.operations import model_actions as actions
from modelhost.operations import models as ops
from modelhost.operations import predictions as predictions_ops
from modelhost.operations import publish as publishing
from modelhost.operations.access_control import authorize, visible_models

router = APIRouter(prefix="/models", tags=["models"])


class ModelCreate(RequestBody):
    name: str = Field(description="URL-safe name, such as wine-quality")
    description: str = ""


class ModelUpdate(RequestBody):
    description: str | None = None
    instance_count: int | None = Field(default=None, description="Instances to run")
    timeout_seconds: float | None = Field(default=None, description="Time a call may take")
    routing_mode: str | None = Field(default=None, description="basic or advanced")
    log_requests: bool | None = Field(
        default=None, description="Write each call's input and output to the instance log"
    )
    network: bool | None = Field(
        default=None, description="Whether the model's code may reach the network"
    )
    capture: bool | None = Field(
        default=None,
        description="Prediction capture: record the inputs and outputs of successful calls",
    )
    capture_share: float | None = Field(
        default=None, description="Share of successful calls captured: more than 0, at most 1"
    )
    tier: str | None = Field(
        default=None,
        description="The hardware tier its instances get (setting hardware_tiers); empty for none",
    )


@router.get("", summary="List the models you may see")
def list_models(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"models": [ops.model_view(services, m) for m in visible_models(services, user)]}


@router.post("", status_code=201, summary="Create a model with no version yet")
def create_model(body: ModelCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return actions.create_model(services, user, actions.NewModel(**body.model_dump()))


@router.get("/{model}", summary="Show a model")
def show_model(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.model_view(services, authorize(services, user, model, "view"))


@router.patch("/{model}", summary="Change a model's settings")
def update_model(
    model: str, body: ModelUpdate, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    request = actions.SettingsChange(model, **body.model_dump())
    return actions.change_settings(services, user, request)


@router.get("/{model}/versions", summary="List a model's versions")
def list_versions(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"versions": ops.list_versions(services, authorize(services, user, model, "view"))}


@router.get("/{model}/versions/{number}", summary="Show a version with its build log")
def show_version(model: str, number: int, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.show_version(services, authorize(services, user, model, "view"), number)


class VersionUpdate(RequestBody):
    batch_max_size: int | None = Field(
        default=None, description="A batching function's largest batch, 1 to 1024"
    )
    batch_max_wait_ms: float | None = Field(
        default=None,
        description="How long calls wait for company while every instance is busy, 0 to 10000",
    )


@router.patch(
    "/{model}/versions/{number}",
    summary="Change a batching version's limits",
    description="Only versions published as batching functions (batch_max_size) have limits "
    "to change; the change reaches their running instances at once, without a restart.",
)
def update_version(
    model: str, number: int, body: VersionUpdate, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    request = actions.BatchingChange(model, number, **body.model_dump())
    return actions.change_batching(services, user, request)


@router.post(
    "/{model}/versions",
    status_code=201,
    response_model=None,
    summary="Publish a new version",
    description=(
        "The body is the project as a .tar.gz archive (Content-Type: application/gzip). "
        "Creates the model if it does not exist. The version starts as 'building'; poll it "
        "until its status is 'running' or 'failed'. With check=true and no body, only checks "
        "what can be checked before the project is uploaded, and answers 204."
    ),
)
async def publish_version(
    model: str,
    request: Request,
    services: ServicesDep,
    user: UserDep,
    file: Annotated[str, Query(description="Script inside the project, e.g. predict.py")],
    function: Annotated[str, Query(description="Function in the script, e.g. predict")],
    description: Annotated[str, Query()] = "",
    concurrency: Annotated[int, Query(description="Calls one instance runs at once")] = 1,
    environment: Annotated[
        str | None,
        Query(
            description="server, isolated, or a named environment; default: isolated when the "
            "project has requirements.txt or pyproject.toml dependencies, else server"
        ),
    ] = None,
    python: Annotated[
        str | None, Query(description="Python of an isolated environment, e.g. 3.11")
    ] = None,
    source: Annotated[str | None, Query(description="Where the project came from")] = None,
    git_commit: Annotated[str | None, Query(description="The commit it was at")] = None,
    example: Annotated[
        str | None,
        Query(
            description='An example input, as JSON text: {"data": {...}} or {"parameters": '
            "[...]}; default: the project's example.json, if it has one"
        ),
    ] = None,
    batch_max_size: Annotated[
        int | None,
        Query(
            description="Publish a batching function (it takes a list of inputs and returns a "
            "list of results): the most calls one batch holds, 1 to 1024"
        ),
    ] = None,
    batch_max_wait_ms: Annotated[
        float | None,
        Query(
            description="With batch_max_size: how long calls wait for company while every "
            "instance is busy, 0 to 10000 ms (default 5)"
        ),
    ] = None,
    fork: Annotated[
        bool,
        Query(
            description="Fork every instance, the first one too, from a process that "
            "imported the script once (the version's fork server), so they share its memory "
            "(the default, Python only: R instances always start fresh). false starts each "
            "instance fresh, for libraries that do not survive a fork (threads started at "
            "import, CUDA, some gRPC clients)"
        ),
    ] = True,
    check: Annotated[
        bool,
        Query(
            description="Only check this publish, before the project is packed and uploaded: "
            "who may publish, the name, entry point and settings; 204 when it would be "
            "accepted, the error it would get otherwise. Nothing is made; send no body"
        ),
    ] = False,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="A key of the client's for this publish (a UUID): sent again with a "
            "retry, it returns the version the first attempt made instead of a second one",
        ),
    ] = None,
) -> dict[str, Any] | Response:
    wanted = publishing.PublishRequest(
        model,
        file,
        function,
        description=description,
        concurrency=concurrency,
        environment=environment,
        python=python,
        source=source,
        git_commit=git_commit,
        idempotency_key=idempotency_key,
        example=example,
        batch_max_size=batch_max_size,
        batch_max_wait_ms=batch_max_wait_ms,
        fork=fork,
    )
    if check:
        publishing.check_publish(services, user, wanted)
        return Response(status_code=204)
    check_archive_type(request)
    publishing.check_publish(services, user, wanted)
    async with received_archive(request, services) as upload:
        found, version = await asyncio.to_thread(
            publishing.publish_version, services, user, wanted, upload
        )
    return {
        "model": ops.model_view(services, found),
        "version": ops.show_version(services, found, version.number),
    }


@router.get("/{model}/instances", summary="List a model's instances")
def list_instances(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"instances": ops.list_instances(services, authorize(services, user, model, "view"))}


@router.get(
    "/{model}/metrics",
    summary="Calls, errors and latency per version over the last minutes (up to 7 days)",
    description=(
        "Per-minute aggregates the server keeps in its database (setting "
        "metrics_retention_days), so they survive a restart: calls that reached a version "
        "(errors are 5xx answers, client_errors 4xx), with p50 and p99 latency in ms as the "
        "server measured it (the upper edge of a histogram bucket, at most 19% high). Points "
        "are step_minutes long: 1 up to two hours, 15 for a day, 120 for a week."
    ),
)
def read_metrics(
    model: str,
    services: ServicesDep,
    user: UserDep,
    minutes: Annotated[int, Query(description="How many recent minutes (1-10080)")] = 60,
) -> dict[str, Any]:
    found = authorize(services, user, model, "view")
    return metrics_ops.model_metrics(services, found, minutes)


@router.get("/{model}/requests", summary="Read a model's request log: a line per call")
def read_requests(
    model: str,
    services: ServicesDep,
    user: UserDep,
    tail: Annotated[int, Query(description="Lines from the end (1-10000)")] = 200,
) -> dict[str, Any]:
    found = authorize(services, user, model, "view-logs")
    return {"lines": ops.read_requests(services, found, tail=tail)}


@router.get("/{model}/logs", summary="Read a model's instance logs")
def read_logs(
    model: str,
    services: ServicesDep,
    user: UserDep,
    tail: Annotated[int, Query(description="Lines from the end")] = 200,
    version: Annotated[int | None, Query(description="Only this version")] = None,
    after: Annotated[str | None, Query(description="Only lines after this time")] = None,
) -> dict[str, Any]:
    found = authorize(services, user, model, "view-logs")
    return {"lines": ops.read_logs(services, found, tail=tail, version=version, after=after)}


@router.post(
    "/{model}/test",
    summary="Call a model as the tester does: no access token, audited as a test-call",
    description=(
        'The body is the model\'s request body ({"data": {...}} or {"parameters": [...]}); '
        "the answer is the model's own answer, status and body, as a caller of its "
        "invocation URL would get it. Needs the 'test' permission (viewer and up)."
    ),
)
async def call_as_tester(
    model: str,
    request: Request,
    services: ServicesDep,
    user: UserDep,
    route: Annotated[
        str, Query(description="latest, labels/NAME (such as labels/prod) or versions/N")
    ] = "latest",
    run_async: Annotated[
        bool,
        Query(
            alias="async",
            description="Submit an asynchronous prediction instead (202 and its id); read it "
            "at GET /models/{model}/predictions/{id} with the same API key",
        ),
    ] = False,
) -> Response:
    return await tester_call(request, services, user, model, route, run_async)


class WebhookBody(RequestBody):
    url: str | None = Field(
        description="Called with POST when an asynchronous prediction ends; null removes it"
    )


@router.get("/{model}/webhook", summary="A model's webhook for asynchronous predictions")
def get_webhook(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return predictions_ops.get_webhook(services, user, model)


@router.put(
    "/{model}/webhook",
    summary="Set or remove a model's webhook (the signing secret is shown once)",
    description=(
        "Each asynchronous prediction that ends is POSTed to the URL as JSON, signed with "
        "HMAC-SHA256 in the X-Modelhost-Signature header (sha256=HEX). Needs manage-settings."
    ),
)
def put_webhook(
    model: str, body: WebhookBody, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return predictions_ops.set_webhook(services, user, model, body.url)
