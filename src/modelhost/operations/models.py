"""Reading and changing models, versions, instances and logs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelhost import errors, tiers, urls
from modelhost.backends.base import InstanceState
from modelhost.builder import uvenv
from modelhost.db.repo import Model, Version
from modelhost.gateway import requestlog
from modelhost.operations import Services, iso
from modelhost.planning import LATEST

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\w+) (.*)$")
_LOG_NAME = re.compile(r"^v(\d+)-(\w+)\.log$")


def get_model(services: Services, key: str) -> Model:
    model = services.repo.find_model(key)
    if model is None:
        raise errors.ModelNotFound(
            f"There is no model '{key}'. 'modelhost models list' shows the models."
        )
    return model


def get_version(services: Services, model: Model, number: int) -> Version:
    version = services.repo.get_version(model.id, number)
    if version is None:
        raise errors.VersionNotFound(
            f"Model '{model.name}' has no version {number}. 'modelhost versions {model.name}' "
            "lists them."
        )
    return version


def _serving(services: Services, model: Model) -> tuple[int | None, set[int]]:
    route = services.routes.find(model.id)
    if route is None:
        return None, set()
    latest = route.routes.get(LATEST)
    return (latest[0][0] if latest else None), {
        n for n, pool in route.pools.items() if pool.ready_count
    }


def version_status(version: Version, running: set[int]) -> str:
    """building, failed, running (serving), stopped (stopped on purpose) or ready (neither)."""
    if version.status != "ready":
        return version.status
    if version.number in running:
        return "running"
    return "stopped" if version.desired_state == "stopped" else "ready"


def version_view(
    version: Version, running: set[int], authors: dict[str, str], *, log: bool = False
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": version.id,
        "number": version.number,
        "status": version_status(version, running),
        "file": version.file,
        "function": version.function,
        "entry_point": f"{version.file}:{version.function}",
        "signature": version.signature,
        "environment": version.environment,
        "environment_revision": version.environment_revision,
        "environment_hash": version.environment_hash,
        "python_version": version.python_version,
        "interpreter": version.interpreter,
        "r_library": version.r_library,
        "packages": uvenv.pins(version.environment_lock or ""),
        "source": version.source,
        "git_commit": version.git_commit,
        "bundle_sha256": version.bundle_sha256,
        "bundle_bytes": version.bundle_bytes,
        "bundle_files": version.bundle_files,
        "author": authors.get(version.author_id, version.author_id),
        "concurrency": version.concurrency,
        # a batching function's limits ({"max_size", "max_wait_ms"}), or null
        "batch": (
            {"max_size": version.batch_max_size, "max_wait_ms": version.batch_max_wait_ms}
            if version.batch_max_size is not None
            else None
        ),
        # instances are forked from a process that imported the script once (false: fresh);
        # R instances always start fresh, whatever was stored (fork defaults to true)
        "fork": version.fork and version.environment_runtime != "r",
        "health": version.health if version.status != "failed" else "-",
        "health_log": version.health_log,
        # why it failed, as data: {"kind", "message", "traceback"}, or null
        "failure": dataclasses.asdict(version.failure) if version.failure else None,
        "description": version.description,
        # the example input published with it (a request body), or null
        "example": json.loads(version.example) if version.example else None,
        "created_at": iso(version.created_at),
        "finished_at": iso(version.finished_at),
    }
    if log:
        view["build_log"] = version.build_log
        view["lock"] = version.environment_lock
    return view


def model_view(services: Services, model: Model) -> dict[str, Any]:
    versions = services.repo.list_versions(model.id)
    latest, _ = _serving(services, model)
    names = services.repo.usernames([model.owner_id])
    newest = versions[-1] if versions else None
    if model.state != "running":
        status = "unpublished" if model.state == "archived" else "stopped"
    elif latest is not None:
        status = "running"
    elif newest is not None and newest.status == "building":
        status = "building"
    elif newest is not None and newest.status == "failed":
        status = "failed"
    else:
        status = "stopped" if versions else "empty"
    return {
        "id": model.id,
        "name": model.name,
        "description": model.description,
        "owner": names.get(model.owner_id, model.owner_id),
        "status": status,
        "latest_version": latest,
        "newest_version": newest.number if newest else None,
        "instance_count": model.instance_count,
        "timeout_seconds": model.timeout_seconds or services.settings.timeout_seconds,
        "routing_mode": model.routing_mode,
        "state": model.state,
        "deployed_version": model.deployed_version,
        "log_requests": model.log_requests,
        "network": model.network,
        "capture": model.capture,
        "capture_share": model.capture_share,
        "tier": _tier_view(services, model.tier),
        "visibility": model.visibility,
        "invocation_mode": model.invocation_mode,
        "labels": {label.name: label.version for label in services.repo.list_labels(model.id)},
        "created_at": iso(model.created_at),
        "updated_at": iso(model.updated_at),
        "urls": {
            "latest": urls.invoke_latest(model.id),
            "version": urls.invoke_version(model.id, "{n}"),
        },
    }


def _tier_view(services: Services, name: str | None) -> dict[str, Any] | None:
    """A model's tier with what it gives (null: none picked)."""
    if name is None:
        return None
    tier = services.settings.hardware_tiers.get(name)
    return {"name": name, **(tier.as_dict() if tier is not None else {"missing": True})}


def list_versions(services: Services, model: Model) -> list[dict[str, Any]]:
    versions = services.repo.list_versions(model.id)
    _, running = _serving(services, model)
    authors = services.repo.usernames([v.author_id for v in versions])
    return [version_view(v, running, authors) for v in versions]


def show_version(services: Services, model: Model, number: int) -> dict[str, Any]:
    version = get_version(services, model, number)
    _, running = _serving(services, model)
    authors = services.repo.usernames([version.author_id])
    return version_view(version, running, authors, log=True)


def update_model(
    services: Services,
    model: Model,
    *,
    description: str | None = None,
    instance_count: int | None = None,
    timeout_seconds: float | None = None,
    log_requests: bool | None = None,
    network: bool | None = None,
    capture: bool | None = None,
    capture_share: float | None = None,
    tier: str | None = None,
) -> Model:
    changes: dict[str, Any] = {}
    if description is not None:
        changes["description"] = description
    if instance_count is not None:
        limit = services.settings.max_instance_count
        if not 1 <= instance_count <= limit:
            raise errors.BadRequest(
                f"A model runs 1 to {limit} instances (setting max_instance_count); "
                f"{instance_count} is out of range."
            )
        changes["instance_count"] = instance_count
    if timeout_seconds is not None:
        limit_seconds = services.settings.max_timeout_seconds
        if not 0 < timeout_seconds <= limit_seconds:
            raise errors.BadRequest(
                f"timeout_seconds must be more than 0 and at most {limit_seconds:g} (setting "
                "max_timeout_seconds)."
            )
        changes["timeout_seconds"] = timeout_seconds
    if capture_share is not None:
        if not 0 < capture_share <= 1:
            raise errors.BadRequest(
                f"capture_share must be more than 0 and at most 1 (the share of successful "
                f"calls captured: 0.1 captures about one in ten), not {capture_share:g}."
            )
        changes["capture_share"] = capture_share
    if capture is not None and capture != model.capture:
        changes["capture"] = capture
    restart = False
    if log_requests is not None and log_requests != model.log_requests:
        changes["log_requests"] = log_requests
        restart = True
    if network is not None and network != model.network:
        if not network and _has_r_versions(services, model):
            raise errors.BadRequest(
                f"'{model.name}' has R versions, whose worker talks to the server over "
                "loopback, so their network cannot be turned off yet; keep it on."
            )
        changes["network"] = network
        restart = True
    if tier is not None and (tier or None) != model.tier:
        if tier:  # "" picks no tier
            picked = tiers.find(services.settings.hardware_tiers, tier)
            if services.settings.backend == "local":
                tiers.check_local(picked)
        changes["tier"] = tier or None
        restart = True
    if not changes:
        return model
    if restart:  # instances restart, with zero downtime, to pick it up
        services.repo.bump_generation(model.id)
    updated = services.repo.update_model(model.id, **changes)
    services.wake()
    return updated


def update_batching(
    services: Services,
    model: Model,
    number: int,
    *,
    max_size: int | None,
    max_wait_ms: float | None,
) -> dict[str, Any]:
    """New batching limits for version ``number``, a batching function; the batches its
    instances are sent change at once, without a restart. Returns the version's view."""
    from modelhost.operations.publish import MAX_BATCH_SIZE, validate_batching

    version = get_version(services, model, number)
    if version.batch_max_size is None:
        raise errors.BadRequest(
            f"Version {number} of '{model.name}' was not published as a batching function, so "
            "its function takes one call's arguments, not a list. To batch, publish a new "
            "version with a batch size (--batch-max-size; batch_max_size in the API and the "
            "Python client)."
        )
    if max_size is None and max_wait_ms is None:
        raise errors.BadRequest(
            f"Give batch_max_size (1 to {MAX_BATCH_SIZE}), batch_max_wait_ms, or both."
        )
    size, wait = validate_batching(
        version.batch_max_size if max_size is None else max_size,
        version.batch_max_wait_ms if max_wait_ms is None else max_wait_ms,
    )
    services.repo.update_version(version.id, batch_max_size=size, batch_max_wait_ms=wait)
    services.wake()
    return show_version(services, model, number)


def _has_r_versions(services: Services, model: Model) -> bool:
    return any(v.environment_runtime == "r" for v in services.repo.list_versions(model.id))


def list_instances(services: Services, model: Model) -> list[dict[str, Any]]:
    return [
        {
            "id": i.spec.instance_id,
            "version": i.spec.version_number,
            # "pending": a Ray instance that no node has taken yet (``message`` says why)
            "state": "pending" if getattr(i, "waiting", None) else i.state.value,
            "busy": bool(i.inflight),
            "pid": i.pid,
            # the Ray node it runs on (backend = ray); None on the local backend
            "node": getattr(i, "node", None),
            # forked from its version's fork server (false: started fresh)
            "forked": bool(getattr(i, "forked", False)),
            # how it gets its hardware tier's CPUs (local backend): a cgroup or cores
            "cpu_limit": getattr(i, "cpu_limit", None),
            "failure": i.failure if i.state is InstanceState.FAILED else None,
            # what a pending instance waits for
            "message": getattr(i, "waiting", None),
            # which server process sends it calls: 0 the main one, 1… a gateway process
            "gateway": services.routes.holder(i.spec.instance_id),
        }
        for i in services.supervisor.instances()
        if i.spec.model_id == model.id
    ]


def _log_lines(path: Path, version: int, instance: str) -> Iterator[dict[str, Any]]:
    stamp = ""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            match = _STAMP.match(line)
            if match:
                stamp, stream, text = match.groups()
            else:  # output written below Python's sys.stdout, e.g. by a C library
                stream, text = "stdout", line
            yield {
                "time": stamp,
                "version": version,
                "instance": instance,
                "stream": stream,
                "text": text,
            }


def read_requests(services: Services, model: Model, *, tail: int = 200) -> list[dict[str, Any]]:
    """The last ``tail`` lines of the model's request log (a line per call), oldest first."""
    if not 1 <= tail <= 10_000:
        raise errors.BadRequest("tail must be between 1 and 10000 lines.")
    if not services.settings.request_log:
        raise errors.Conflict(
            "The request log is off on this server (setting request_log); an admin can turn "
            "it on with MODELHOST_REQUEST_LOG=true and a restart."
        )
    return requestlog.read(services.children.log_dir(model.id), tail)


def read_logs(
    services: Services,
    model: Model,
    *,
    tail: int = 200,
    version: int | None = None,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """The last ``tail`` lines of the model's instance logs, oldest first, across instances;
    with ``after`` (a line's time), only lines written later, for following a log."""
    if not 1 <= tail <= 10_000:
        raise errors.BadRequest("tail must be between 1 and 10000 lines.")
    if after is not None:
        try:
            dt.datetime.fromisoformat(after.replace("Z", "+00:00"))
        except ValueError:
            raise errors.BadRequest(
                f"after is a log line's time, such as 2026-12-07T01:02:03.456Z (the 'time' of "
                f"the last line read), not '{after}'."
            ) from None
    if version is not None:
        get_version(services, model, version)  # a 404 for a number that does not exist
    directory = services.children.log_dir(model.id)
    lines: list[dict[str, Any]] = []
    if directory.is_dir():
        for path in directory.glob("v*-*.log"):
            match = _LOG_NAME.match(path.name)
            if not match or (version is not None and int(match.group(1)) != version):
                continue
            lines.extend(_log_lines(path, int(match.group(1)), match.group(2)))
    if after is not None:
        lines = [line for line in lines if line["time"] > after]
    lines.sort(key=lambda line: line["time"])  # stable: each file keeps its own order
    return lines[-tail:]
