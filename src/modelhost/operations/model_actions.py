"""The management actions on one model, as the signed-in user: create, settings, deploy,
rollback, promote, labels, stop, start, restart, unpublish, delete and environment variables.

Each takes the actor and a typed request, checks the permission the action table
(:mod:`modelhost.events`) gives it (a refusal is audited), validates, does the work with
:mod:`modelhost.operations.lifecycle`, :mod:`~modelhost.operations.models` and
:mod:`~modelhost.operations.variables`, and records its event in the same transaction
(:func:`~modelhost.operations.audit.audited`, which also wakes the reconciler). The API, the UI
and the jobs call these; none of them checks, validates or audits again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from modelhost import errors
from modelhost.db.repo import User
from modelhost.events import (
    CAPTURE_OFF,
    CAPTURE_ON,
    DELETE,
    DEPLOY,
    ENV_SET,
    ENV_UNSET,
    LABEL_DELETE,
    LABEL_SET,
    MODEL_CREATE,
    PROMOTE,
    RESTART,
    ROLLBACK,
    SETTINGS_CHANGE,
    START,
    STOP,
    UNPUBLISH,
)
from modelhost.operations import Services, lifecycle, variables
from modelhost.operations import models as ops
from modelhost.operations.access_control import authorize_action
from modelhost.operations.audit import audited, record
from modelhost.operations.publish import check_new_model


@dataclass(frozen=True)
class NewModel:
    name: str
    description: str = ""


def create_model(services: Services, actor: User, request: NewModel) -> dict[str, Any]:
    """A model with no version yet, owned by ``actor`` (setting ``model_creators``)."""
    check_new_model(services, actor, request.name)
    if services.repo.find_model(request.name):
        raise errors.Conflict(f"A model named '{request.name}' already exists.")
    with audited(services, actor, MODEL_CREATE) as audit:
        model = audit.model = services.repo.create_model(
            request.name,
            owner_id=actor.id,
            description=request.description,
            instance_count=services.settings.default_instance_count,
            invocation_mode=services.settings.default_invocation_mode,
        )
    return ops.model_view(services, model)


@dataclass(frozen=True)
class SettingsChange:
    """What to change; ``None`` leaves a setting as it is."""

    model: str
    description: str | None = None
    instance_count: int | None = None
    timeout_seconds: float | None = None
    routing_mode: str | None = None
    log_requests: bool | None = None
    network: bool | None = None
    #: prediction capture on or off, and the share of successful calls it records
    capture: bool | None = None
    capture_share: float | None = None
    #: the hardware tier's name; "" for none
    tier: str | None = None


def change_settings(services: Services, actor: User, request: SettingsChange) -> dict[str, Any]:
    found = authorize_action(services, actor, request.model, SETTINGS_CHANGE)
    changes = {k: v for k, v in asdict(request).items() if k != "model" and v is not None}
    with audited(services, actor, SETTINGS_CHANGE, model=found, detail=changes):
        if request.routing_mode is not None:
            found = lifecycle.set_routing(services, found, request.routing_mode)
        updated = ops.update_model(
            services,
            found,
            description=request.description,
            instance_count=request.instance_count,
            timeout_seconds=request.timeout_seconds,
            log_requests=request.log_requests,
            network=request.network,
            capture=request.capture,
            capture_share=request.capture_share,
            tier=request.tier,
        )
        if updated.capture != found.capture:  # who turned capture on or off, on its own
            detail = {"share": updated.capture_share} if updated.capture else {}
            record(
                services,
                actor,
                CAPTURE_ON if updated.capture else CAPTURE_OFF,
                model=updated,
                detail=detail,
            )
    return ops.model_view(services, updated)


@dataclass(frozen=True)
class BatchingChange:
    """New batching limits for a version published as a batching function."""

    model: str
    version: int
    batch_max_size: int | None = None
    batch_max_wait_ms: float | None = None


def change_batching(services: Services, actor: User, request: BatchingChange) -> dict[str, Any]:
    found = authorize_action(services, actor, request.model, SETTINGS_CHANGE)
    changes = {
        k: v for k, v in asdict(request).items() if k not in ("model", "version") and v is not None
    }
    with audited(
        services, actor, SETTINGS_CHANGE, model=found, version=request.version, detail=changes
    ):
        return ops.update_batching(
            services,
            found,
            request.version,
            max_size=request.batch_max_size,
            max_wait_ms=request.batch_max_wait_ms,
        )


@dataclass(frozen=True)
class VersionChoice:
    """A model and, for the actions that take one, a version number."""

    model: str
    version: int | None = None


def deploy(services: Services, actor: User, request: VersionChoice) -> dict[str, Any]:
    """Serve a version: on latest (basic routing) or on the prod label (advanced)."""
    found = authorize_action(services, actor, request.model, DEPLOY)
    number = request.version
    if number is None:
        raise errors.BadRequest('Say which version to deploy: {"version": N}.')
    with audited(services, actor, DEPLOY, model=found, version=number):
        return lifecycle.deploy(services, found, number)


def rollback(services: Services, actor: User, request: VersionChoice) -> dict[str, Any]:
    """Serve the newest ready version older than the current one."""
    found = authorize_action(services, actor, request.model, ROLLBACK)
    with audited(services, actor, ROLLBACK, model=found) as audit:
        result = lifecycle.rollback(services, found)
        audit.version = result["to"]
        audit.detail["previous"] = result["from"]
        return result


def promote(services: Services, actor: User, request: VersionChoice) -> dict[str, Any]:
    """Point the prod label at a version (default: the newest ready one)."""
    found = authorize_action(services, actor, request.model, PROMOTE)
    with audited(services, actor, PROMOTE, model=found) as audit:
        result = lifecycle.promote(services, found, request.version)
        audit.version = result["version"]
        return result


@dataclass(frozen=True)
class LabelChange:
    model: str
    label: str
    version: int
    canary_version: int | None = None
    canary_weight: int = 0


def set_label(services: Services, actor: User, request: LabelChange) -> dict[str, Any]:
    found = authorize_action(services, actor, request.model, LABEL_SET)
    detail = {
        "label": request.label,
        "canary_version": request.canary_version,
        "canary_weight": request.canary_weight,
    }
    with audited(services, actor, LABEL_SET, model=found, version=request.version, detail=detail):
        return lifecycle.set_label(
            services,
            found,
            request.label,
            request.version,
            canary_version=request.canary_version,
            canary_weight=request.canary_weight,
        )


def delete_label(services: Services, actor: User, model: str, label: str) -> None:
    found = authorize_action(services, actor, model, LABEL_DELETE)
    with audited(services, actor, LABEL_DELETE, model=found, detail={"label": label}):
        lifecycle.delete_label(services, found, label)


def stop(services: Services, actor: User, request: VersionChoice) -> dict[str, Any]:
    """Stop a model, or one version of it."""
    found = authorize_action(services, actor, request.model, STOP)
    with audited(services, actor, STOP, model=found, version=request.version):
        lifecycle.stop(services, found, request.version)
    return ops.model_view(services, ops.get_model(services, found.id))


def start(services: Services, actor: User, request: VersionChoice) -> dict[str, Any]:
    """Start a model, or keep one version running."""
    found = authorize_action(services, actor, request.model, START)
    with audited(services, actor, START, model=found, version=request.version):
        lifecycle.start(services, found, request.version)
    return ops.model_view(services, ops.get_model(services, found.id))


def restart(services: Services, actor: User, model: str) -> dict[str, Any]:
    """Replace every instance, with zero downtime."""
    found = authorize_action(services, actor, model, RESTART)
    with audited(services, actor, RESTART, model=found):
        lifecycle.restart(services, found)
    return ops.model_view(services, ops.get_model(services, found.id))


def unpublish(services: Services, actor: User, model: str) -> dict[str, Any]:
    """Stop and archive a model; its data is kept."""
    found = authorize_action(services, actor, model, UNPUBLISH)
    with audited(services, actor, UNPUBLISH, model=found):
        lifecycle.unpublish(services, found)
    return ops.model_view(services, ops.get_model(services, found.id))


def delete(services: Services, actor: User, model: str, confirm: str | None) -> None:
    """Delete a model and its data; ``confirm`` must be its name."""
    found = authorize_action(services, actor, model, DELETE)
    with audited(services, actor, DELETE, model=found):
        remove_files = lifecycle.delete(services, found.id, confirm)
    remove_files()


@dataclass(frozen=True)
class EnvChange:
    model: str
    name: str
    value: str
    secret: bool = False


def set_env(services: Services, actor: User, request: EnvChange) -> dict[str, Any]:
    """Set an environment variable; instances restart to pick it up."""
    found = authorize_action(services, actor, request.model, ENV_SET)
    detail = {"name": request.name, "secret": request.secret}
    with audited(services, actor, ENV_SET, model=found, detail=detail):
        variables.set_env(services, found, request.name, request.value, secret=request.secret)
    return {"name": request.name, "secret": request.secret}


def unset_env(services: Services, actor: User, model: str, name: str) -> None:
    found = authorize_action(services, actor, model, ENV_UNSET)
    with audited(services, actor, ENV_UNSET, model=found, detail={"name": name}):
        variables.unset_env(services, found, name)
