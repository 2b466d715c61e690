"""``/api/v1/models/{model}/...``: deploy, rollback, promote, labels, stop, start, restart,
unpublish, delete, and environment variables."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from modelhost import errors
from modelhost.api.deps import ServicesDep, UserDep
from modelhost.operations import env as env_ops
from modelhost.operations import lifecycle
from modelhost.operations import models as ops

router = APIRouter(prefix="/models/{model}", tags=["lifecycle"])


class VersionChoice(BaseModel):
    version: int | None = Field(default=None, description="Version number; see each route")


class LabelBody(BaseModel):
    version: int
    canary_version: int | None = None
    canary_weight: int = Field(default=0, description="Percent of calls sent to the canary")


class EnvBody(BaseModel):
    value: str
    secret: bool = Field(default=False, description="Encrypted, write-only, never returned")


@router.post("/deploy", summary="Serve a version (latest in basic routing, prod in advanced)")
def deploy(model: str, body: VersionChoice, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = ops.get_model(services, model)
    if body.version is None:
        raise errors.BadRequest('Say which version to deploy: {"version": N}.')
    return lifecycle.deploy(services, found, body.version)


@router.post("/rollback", summary="Serve the newest ready version older than the current one")
def rollback(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return lifecycle.rollback(services, ops.get_model(services, model))


@router.post("/promote", summary="Point the prod label at a version (default: newest ready)")
def promote(
    model: str, body: VersionChoice, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return lifecycle.promote(services, ops.get_model(services, model), body.version)


@router.get("/labels", summary="List a model's labels")
def list_labels(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"labels": lifecycle.list_labels(services, ops.get_model(services, model))}


@router.put("/labels/{label}", summary="Point a label at a version, with an optional canary")
def set_label(
    model: str, label: str, body: LabelBody, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return lifecycle.set_label(
        services,
        ops.get_model(services, model),
        label,
        body.version,
        canary_version=body.canary_version,
        canary_weight=body.canary_weight,
    )


@router.delete("/labels/{label}", status_code=204, summary="Remove a label")
def delete_label(model: str, label: str, services: ServicesDep, user: UserDep) -> None:
    lifecycle.delete_label(services, ops.get_model(services, model), label)


@router.post("/stop", summary='Stop a model, or one version with {"version": N}')
def stop(model: str, body: VersionChoice, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = ops.get_model(services, model)
    lifecycle.stop(services, found, body.version)
    return ops.model_view(services, ops.get_model(services, model))


@router.post("/start", summary="Start a model, or keep one version running")
def start(model: str, body: VersionChoice, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = ops.get_model(services, model)
    lifecycle.start(services, found, body.version)
    return ops.model_view(services, ops.get_model(services, model))


@router.post("/restart", summary="Replace every instance, with zero downtime")
def restart(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = ops.get_model(services, model)
    lifecycle.restart(services, found)
    return ops.model_view(services, ops.get_model(services, model))


@router.post("/unpublish", summary="Stop and archive a model; its data is kept")
def unpublish(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = ops.get_model(services, model)
    lifecycle.unpublish(services, found)
    return ops.model_view(services, ops.get_model(services, model))


@router.delete("", status_code=204, summary="Delete a model and its data (needs ?confirm=NAME)")
def delete(
    model: str,
    services: ServicesDep,
    user: UserDep,
    confirm: Annotated[str | None, Query(description="The model's name")] = None,
) -> None:
    lifecycle.delete(services, model, confirm)


@router.get("/env", summary="List environment variables (secret values are not returned)")
def list_env(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"variables": env_ops.list_env(services, ops.get_model(services, model))}


@router.put("/env/{name}", summary="Set an environment variable (instances restart)")
def set_env(
    model: str, name: str, body: EnvBody, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    found = ops.get_model(services, model)
    env_ops.set_env(services, found, name, body.value, secret=body.secret)
    return {"name": name, "secret": body.secret}


@router.delete("/env/{name}", status_code=204, summary="Remove an environment variable")
def unset_env(model: str, name: str, services: ServicesDep, user: UserDep) -> None:
    env_ops.unset_env(services, ops.get_model(services, model), name)
