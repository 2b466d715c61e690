"""``/api/v1/models/{model}/...``: deploy, rollback, promote, labels, stop, start, restart,
unpublish, delete, and environment variables. Each parses the request and calls its operation
(:mod:`modelhost.operations.model_actions`), which checks permission and is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from modelhost.api.request_body import RequestBody
from modelhost.httpkit.deps import ServicesDep, UserDep
from modelhost.operations import lifecycle, variables
from modelhost.operations import model_actions as actions
from modelhost.operations.access_control import authorize

router = APIRouter(prefix="/models/{model}", tags=["lifecycle"])


class VersionChoice(RequestBody):
    version: int | None = Field(default=None, description="Version number; see each route")


class LabelBody(RequestBody):
    version: int
    canary_version: int | None = None
    canary_weight: int = Field(default=0, description="Percent of calls sent to the canary")


class EnvBody(RequestBody):
    value: str
    secret: bool = Field(default=False, description="Encrypted, write-only, never returned")


Choice = VersionChoice | None


def _number(body: Choice) -> int | None:
    return body.version if body is not None else None


@router.post("/deploy", summary="Serve a version (latest in basic routing, prod in advanced)")
def deploy(model: str, services: ServicesDep, user: UserDep, body: Choice = None) -> dict[str, Any]:
    return actions.deploy(services, user, actions.VersionChoice(model, _number(body)))


@router.post("/rollback", summary="Serve the newest ready version older than the current one")
def rollback(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return actions.rollback(services, user, actions.VersionChoice(model))


@router.post("/promote", summary="Point the prod label at a version (default: newest ready)")
def promote(
    model: str, services: ServicesDep, user: UserDep, body: Choice = None
) -> dict[str, Any]:
    return actions.promote(services, user, actions.VersionChoice(model, _number(body)))


@router.get("/labels", summary="List a model's labels")
def list_labels(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"labels": lifecycle.list_labels(services, authorize(services, user, model, "view"))}


@router.put("/labels/{label}", summary="Point a label at a version, with an optional canary")
def set_label(
    model: str, label: str, body: LabelBody, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return actions.set_label(services, user, actions.LabelChange(model, label, **body.model_dump()))


@router.delete("/labels/{label}", status_code=204, summary="Remove a label")
def delete_label(model: str, label: str, services: ServicesDep, user: UserDep) -> None:
    actions.delete_label(services, user, model, label)


@router.post("/stop", summary='Stop a model, or one version with {"version": N}')
def stop(model: str, services: ServicesDep, user: UserDep, body: Choice = None) -> dict[str, Any]:
    return actions.stop(services, user, actions.VersionChoice(model, _number(body)))


@router.post("/start", summary="Start a model, or keep one version running")
def start(model: str, services: ServicesDep, user: UserDep, body: Choice = None) -> dict[str, Any]:
    return actions.start(services, user, actions.VersionChoice(model, _number(body)))


@router.post("/restart", summary="Replace every instance, with zero downtime")
def restart(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return actions.restart(services, user, model)


@router.post("/unpublish", summary="Stop and archive a model; its data is kept")
def unpublish(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return actions.unpublish(services, user, model)


@router.delete("", status_code=204, summary="Delete a model and its data (needs ?confirm=NAME)")
def delete(
    model: str,
    services: ServicesDep,
    user: UserDep,
    confirm: Annotated[str | None, Query(description="The model's name")] = None,
) -> None:
    actions.delete(services, user, model, confirm)


@router.get("/env", summary="List environment variables (secret values are not returned)")
def list_env(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = authorize(services, user, model, "view-config")
    return {"variables": variables.list_env(services, found)}


@router.put("/env/{name}", summary="Set an environment variable (instances restart)")
def set_env(
    model: str, name: str, body: EnvBody, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return actions.set_env(services, user, actions.EnvChange(model, name, **body.model_dump()))


@router.delete("/env/{name}", status_code=204, summary="Remove an environment variable")
def unset_env(model: str, name: str, services: ServicesDep, user: UserDep) -> None:
    actions.unset_env(services, user, model, name)
