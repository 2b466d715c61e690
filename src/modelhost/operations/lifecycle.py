"""Deploy, roll back, promote, label, route, scale, stop, start, restart, unpublish, delete.

Each changes desired state in the database and wakes the reconciler, which makes it so with
zero downtime. They return what the caller needs to report back.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from typing import Any

from modelhost import errors
from modelhost.db.repo import Model, Version
from modelhost.gateway import capture
from modelhost.operations import Services
from modelhost.operations.models import get_model, get_version
from modelhost.planning import PROMOTED, label_route, latest_target

LABEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
ROUTING_MODES = ("basic", "advanced")


def _ready_numbers(services: Services, model: Model) -> list[int]:
    return [v.number for v in services.repo.list_versions(model.id) if v.status == "ready"]


def _deployable(services: Services, model: Model, number: int) -> Version:
    version = get_version(services, model, number)
    if version.status == "building":
        raise errors.Conflict(
            f"Version {number} of '{model.name}' is still building; wait until it is ready."
        )
    if version.status == "failed":
        raise errors.Conflict(
            f"Version {number} of '{model.name}' failed to build and cannot serve; "
            f"'modelhost versions {model.name} --number {number}' shows why."
        )
    if version.desired_state == "stopped":
        services.repo.update_version(version.id, desired_state=None)
    return version


def _current_target(services: Services, model: Model) -> int | None:
    """What deploy and rollback move: latest in basic routing, the prod label in advanced."""
    if model.routing_mode == "advanced":
        label = next((x for x in services.repo.list_labels(model.id) if x.name == PROMOTED), None)
        return label.version if label else None
    return latest_target(model, _ready_numbers(services, model))


def deploy(services: Services, model: Model, number: int) -> dict[str, Any]:
    """Serve version ``number``: on latest (basic routing) or on the prod label (advanced)."""
    _deployable(services, model, number)
    previous = _current_target(services, model)
    if model.routing_mode == "advanced":
        services.repo.set_label(model.id, PROMOTED, number, None, 0)
        route = label_route(PROMOTED)
    else:
        services.repo.update_model(model.id, deployed_version=number)
        route = "latest"
    services.wake()
    return {
        "model": model.name,
        "route": route,
        "from": previous,
        "to": number,
        "model_state": model.state,
    }


def rollback(services: Services, model: Model) -> dict[str, Any]:
    """Deploy the newest ready version older than the one serving now."""
    current = _current_target(services, model)
    if current is None and model.routing_mode == "advanced":
        raise errors.Conflict(
            f"'{model.name}' is in advanced routing, where rollback moves its {PROMOTED} label, "
            f"and has no {PROMOTED} label yet, so there is nothing to roll back; point it at a "
            f"version with 'modelhost promote {model.name} --version N'."
        )
    if current is None:
        raise errors.Conflict(
            f"'{model.name}' serves no version yet, so there is nothing to roll back."
        )
    older = [n for n in _ready_numbers(services, model) if n < current]
    if not older:
        raise errors.Conflict(
            f"'{model.name}' serves version {current} and has no older ready version to roll "
            "back to; deploy a specific version with 'modelhost deploy MODEL --version N'."
        )
    return deploy(services, model, max(older))


def promote(services: Services, model: Model, number: int | None) -> dict[str, Any]:
    """Point the ``prod`` label at ``number`` (default: the newest ready version)."""
    if number is None:
        ready = _ready_numbers(services, model)
        if not ready:
            raise errors.Conflict(f"'{model.name}' has no ready version to promote.")
        number = max(ready)
    return set_label(services, model, PROMOTED, number)


def set_label(
    services: Services,
    model: Model,
    name: str,
    number: int,
    *,
    canary_version: int | None = None,
    canary_weight: int = 0,
) -> dict[str, Any]:
    """Point a label at a version, optionally sending ``canary_weight`` % to another one."""
    if name == "latest":
        raise errors.BadRequest(
            "'latest' is not a label: it is the route that follows the routing mode. Pick "
            "another name, such as staging."
        )
    if not LABEL_PATTERN.match(name):
        raise errors.BadRequest(
            f"'{name}' is not a valid label: use lowercase letters, digits, '-', '_' or '.', "
            "such as prod, staging or champion."
        )
    if not 0 <= canary_weight <= 100:
        raise errors.BadRequest("The canary weight is a percentage from 0 to 100.")
    if (canary_version is None) != (canary_weight == 0):
        raise errors.BadRequest(
            "Give a canary version together with a weight above 0 (for example --canary 3 "
            "--weight 10), or neither."
        )
    if canary_version == number:
        raise errors.BadRequest("The canary must be a different version from the label's own.")
    _deployable(services, model, number)
    if canary_version is not None:
        _deployable(services, model, canary_version)
    label = services.repo.set_label(model.id, name, number, canary_version, canary_weight)
    services.wake()
    return label_view(label.name, label.version, label.canary_version, label.canary_weight)


def label_view(
    name: str, version: int, canary_version: int | None, canary_weight: int
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "canary_version": canary_version,
        "canary_weight": canary_weight,
    }


def list_labels(services: Services, model: Model) -> list[dict[str, Any]]:
    return [
        label_view(x.name, x.version, x.canary_version, x.canary_weight)
        for x in services.repo.list_labels(model.id)
    ]


def delete_label(services: Services, model: Model, name: str) -> None:
    if not services.repo.delete_label(model.id, name):
        raise errors.NotFound(f"Model '{model.name}' has no label '{name}'.")
    services.wake()


def set_routing(services: Services, model: Model, mode: str) -> Model:
    if mode not in ROUTING_MODES:
        raise errors.BadRequest(f"Routing mode must be basic or advanced, not '{mode}'.")
    updated = services.repo.update_model(model.id, routing_mode=mode)
    services.wake()
    return updated


def stop(services: Services, model: Model, number: int | None = None) -> None:
    """Stop a whole model, or one version of it (its routes then answer 503)."""
    if number is None:
        services.repo.update_model(model.id, state="stopped")
    else:
        version = get_version(services, model, number)
        if version.status == "failed":
            raise errors.Conflict(
                f"Version {number} of '{model.name}' failed to build and does not run, so "
                f"there is nothing to stop; 'modelhost versions {model.name} --number {number}' "
                "shows why."
            )
        services.repo.update_version(version.id, desired_state="stopped")
    services.wake()


def start(services: Services, model: Model, number: int | None = None) -> None:
    """Start a stopped or unpublished model, or keep one version running even off-route."""
    if number is None:
        services.repo.update_model(model.id, state="running")
    else:
        version = _deployable(services, model, number)
        services.repo.update_version(version.id, desired_state="running")
    services.wake()


def restart(services: Services, model: Model) -> None:
    """Replace every instance with a fresh one, with zero downtime."""
    services.repo.bump_generation(model.id)
    services.wake()


def unpublish(services: Services, model: Model) -> None:
    """Stop the model and archive it: its URLs answer 404 saying so; all data is kept."""
    services.repo.update_model(model.id, state="archived")
    services.wake()


def delete(services: Services, key: str, confirm: str | None) -> Callable[[], None]:
    """Delete a model's rows (versions, labels, variables, tokens, collaborators).

    Returns the clean-up of its files (working copies, logs, bundles no other version uses),
    to run once the deletion is committed: files never go before the rows do.
    """
    model = get_model(services, key)
    if confirm != model.name:
        raise errors.BadRequest(
            f"Deleting '{model.name}' removes its versions, logs and data for good; confirm by "
            f"passing confirm={model.name} (the CLI asks for it)."
        )
    versions = services.repo.list_versions(model.id)
    services.repo.delete_model(model.id)

    def remove_files() -> None:
        services.wake()
        services.metrics.forget(version.id for version in versions)
        for version in versions:
            shutil.rmtree(services.children.instance_workdir(version.id), ignore_errors=True)
            if not services.repo.bundle_in_use(version.bundle_sha256):
                services.store.delete(version.bundle_sha256)
        shutil.rmtree(services.children.log_dir(model.id), ignore_errors=True)
        shutil.rmtree(
            capture.partition_root(services.settings.home_path, model.id), ignore_errors=True
        )

    return remove_files
