"""``/api/v1/models/{model}/...``: deploy, rollback, promote, labels, stop, start, restart,
unpublish, delete, and environment variables. Each checks permission and is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from modelhost import errors
from modelhost.api.deps import ServicesDep, UserDep
from modelhost.operations import env as env_ops
from modelhost.operations import lifecycle
from modelhost.operations import models as ops
from modelhost.operations.access import authorize
from modelhost.operations.audit import audited

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


Choice = VersionChoice | None


def _number(body: Choice) -> int | None:
    return body.version if body is not None else None


@router.post("/deploy", summary="Serve a version (latest in basic routing, prod in advanced)")
def deploy(model: str, services: ServicesDep, user: UserDep, body: Choice = None) -> dict[str, Any]:
    found = authorize(services, user, model, "deploy", audit_as="deploy")
    number = _number(body)
    if number is None:
        raise errors.BadRequest('Say which version to deploy: {"version": N}.')
    with audited(services, user, "deploy", model=found, version=number):
        return lifecycle.deploy(services, found, number)


@router.post("/rollback", summary="Serve the newest ready version older than the current one")
def rollback(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = authorize(services, user, model, "deploy", audit_as="rollback")
    with audited(services, user, "rollback", model=found) as audit:
        result = lifecycle.rollback(services, found)
        audit.version = result["to"]
        audit.detail["previous"] = result["from"]
        return result


@router.post("/promote", summary="Point the prod label at a version (default: newest ready)")
def promote(
    model: str, services: ServicesDep, user: UserDep, body: Choice = None
) -> dict[str, Any]:
    found = authorize(services, user, model, "deploy", audit_as="promote")
    with audited(services, user, "promote", model=found) as audit:
        result = lifecycle.promote(services, found, _number(body))
        audit.version = result["version"]
        return result


@router.get("/labels", summary="List a model's labels")
def list_labels(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"labels": lifecycle.list_labels(services, authorize(services, user, model, "view"))}


@router.put("/labels/{label}", summary="Point a label at a version, with an optional canary")
def set_label(
    model: str, label: str, body: LabelBody, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    found = authorize(services, user, model, "deploy", audit_as="label-set")
    detail = {
        "label": label,
        "canary_version": body.canary_version,
        "canary_weight": body.canary_weight,
    }
    with audited(services, user, "label-set", model=found, version=body.version, detail=detail):
        return lifecycle.set_label(
            services,
            found,
            label,
            body.version,
            canary_version=body.canary_version,
            canary_weight=body.canary_weight,
        )


@router.delete("/labels/{label}", status_code=204, summary="Remove a label")
def delete_label(model: str, label: str, services: ServicesDep, user: UserDep) -> None:
    found = authorize(services, user, model, "deploy", audit_as="label-delete")
    with audited(services, user, "label-delete", model=found, detail={"label": label}):
        lifecycle.delete_label(services, found, label)


@router.post("/stop", summary='Stop a model, or one version with {"version": N}')
def stop(model: str, services: ServicesDep, user: UserDep, body: Choice = None) -> dict[str, Any]:
    found = authorize(services, user, model, "deploy", audit_as="stop")
    with audited(services, user, "stop", model=found, version=_number(body)):
        lifecycle.stop(services, found, _number(body))
    return ops.model_view(services, ops.get_model(services, found.id))


@router.post("/start", summary="Start a model, or keep one version running")
def start(model: str, services: ServicesDep, user: UserDep, body: Choice = None) -> dict[str, Any]:
    found = authorize(services, user, model, "deploy", audit_as="start")
    with audited(services, user, "start", model=found, version=_number(body)):
        lifecycle.start(services, found, _number(body))
    return ops.model_view(services, ops.get_model(services, found.id))


@router.post("/restart", summary="Replace every instance, with zero downtime")
def restart(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = authorize(services, user, model, "deploy", audit_as="restart")
    with audited(services, user, "restart", model=found):
        lifecycle.restart(services, found)
    return ops.model_view(services, ops.get_model(services, found.id))


@router.post("/unpublish", summary="Stop and archive a model; its data is kept")
def unpublish(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = authorize(services, user, model, "unpublish", audit_as="unpublish")
    with audited(services, user, "unpublish", model=found):
        lifecycle.unpublish(services, found)
    return ops.model_view(services, ops.get_model(services, found.id))


@router.delete("", status_code=204, summary="Delete a model and its data (needs ?confirm=NAME)")
def delete(
    model: str,
    services: ServicesDep,
    user: UserDep,
    confirm: Annotated[str | None, Query(description="The model's name")] = None,
) -> None:
    found = authorize(services, user, model, "delete", audit_as="delete")
    with audited(services, user, "delete", model=found):
        remove_files = lifecycle.delete(services, found.id, confirm)
    remove_files()


@router.get("/env", summary="List environment variables (secret values are not returned)")
def list_env(model: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = authorize(services, user, model, "view-config")
    return {"variables": env_ops.list_env(services, found)}


@router.put("/env/{name}", summary="Set an environment variable (instances restart)")
def set_env(
    model: str, name: str, body: EnvBody, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    found = authorize(services, user, model, "manage-env", audit_as="env-set")
    with audited(
        services, user, "env-set", model=found, detail={"name": name, "secret": body.secret}
    ):
        env_ops.set_env(services, found, name, body.value, secret=body.secret)
    return {"name": name, "secret": body.secret}


@router.delete("/env/{name}", status_code=204, summary="Remove an environment variable")
def unset_env(model: str, name: str, services: ServicesDep, user: UserDep) -> None:
    found = authorize(services, user, model, "manage-env", audit_as="env-unset")
    with audited(services, user, "env-unset", model=found, detail={"name": name}):
        env_ops.unset_env(services, found, name)
