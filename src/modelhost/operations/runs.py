"""Runs: a command executed on the server in a fresh copy of an uploaded project.

A run is created ``queued`` with its project stored as a bundle; the loop in
:mod:`modelhost.jobs.runner` starts it. A run that publishes to a model needs the ``run``
action on it (the role that may publish); a run with no model is its creator's, and admins'.

A run that publishes stays ``running`` after its command, until the version it published has
loaded (then it has ``succeeded``) or failed to (then it has ``failed``, saying why): a run
is green only when what it produced serves.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from modelhost import errors
from modelhost.builder import environments
from modelhost.builder.bundles import StoredBundle, extract_archive
from modelhost.builder.packing import collect_files, pack_project
from modelhost.db.repo import Model, Run, User, Version
from modelhost.events import RUN, RUN_CANCEL, Action
from modelhost.operations import Services, access_control, iso
from modelhost.operations.access_control import authorize, authorize_action
from modelhost.operations.audit import audited, record
from modelhost.operations.publish import (
    PublishRequest,
    check_publish,
    publish_version,
    validate_entry_point,
    validate_environment,
)
from modelhost.permissions import can_see, ensure_permission, ensure_server_permission, role_of

MAX_COMMAND_BYTES = 16 * 1024
LOG_CHUNK_BYTES = 1 << 20


# --------------------------------------------------------------------------- checks


def validate_command(command: list[str]) -> list[str]:
    if not command or not command[0].strip():
        raise errors.BadRequest(
            "Give the command to run after '--', for example: modelhost run . -- python train.py"
        )
    if len(json.dumps(command)) > MAX_COMMAND_BYTES or any("\0" in part for part in command):
        raise errors.BadRequest(f"The command is over {MAX_COMMAND_BYTES} bytes or has NUL bytes.")
    return command


def validate_timeout(services: Services, timeout: float | None) -> float:
    limit = services.settings.max_run_timeout_seconds
    if timeout is None:
        return float(min(services.settings.run_timeout_seconds, limit))
    if not 0 < timeout <= limit:
        raise errors.BadRequest(
            f"A run's timeout is more than 0 and at most {limit:g} s (setting "
            "max_run_timeout_seconds)."
        )
    return float(timeout)


def publish_target(
    services: Services,
    user: User,
    model: str | None,
    file: str | None,
    function: str | None,
    *,
    action: Action,
) -> tuple[Model | None, str | None, str | None]:
    """The model a run or schedule publishes to (checked for ``action``), and its entry point."""
    if model is None:
        if file or function:
            raise errors.BadRequest(
                "--file and --function say what to publish; give them with --publish-model."
            )
        try:
            ensure_server_permission(user, "run-unattached", services.settings)
        except errors.Forbidden as exc:
            record(services, user, action, outcome="denied", detail={"error": exc.message})
            raise
        return None, None, None
    found = services.repo.find_model(model)
    if found is None:
        raise errors.ModelNotFound(
            f"There is no model '{model}'. Publish the project once with 'modelhost publish "
            f"PATH --name {model} ...' so a run can publish its next versions."
        )
    found = authorize_action(services, user, found.id, action)
    if not file or not function:
        raise errors.BadRequest(
            "Say which function a successful run publishes: --file predict.py --function predict."
        )
    file, function = validate_entry_point(file, function)
    return found, file, function


def store_project(
    services: Services, archive: BinaryIO, environment: str | None = None
) -> tuple[StoredBundle, Path]:
    """Extract an upload with the publish checks and store it; returns the bundle and the tree.
    A project that cannot have ``environment`` is refused before anything is stored.

    The caller owns the extracted tree and removes it when done.
    """
    settings = services.settings
    scratch = settings.home_path / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=scratch, prefix="run-"))
    try:
        extract_archive(
            archive,
            staging,
            max_bytes=settings.max_bundle_bytes,
            max_files=settings.max_bundle_files,
        )
        check_project_environment(environment, staging)
        return services.store.put_tree(staging), staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- paths


def run_dir(services: Services, run_id: str) -> Path:
    return services.children.run_dir(run_id)


def workdir(services: Services, run_id: str) -> Path:
    return run_dir(services, run_id) / "work"


def log_path(services: Services, run_id: str) -> Path:
    return run_dir(services, run_id) / "run.log"


# --------------------------------------------------------------------------- use cases


def run_environment(services: Services, environment: str | None) -> str | None:
    """The environment a run or schedule asks for: ``server``, ``isolated``, a named
    environment that exists, or None, when the project decides as it does for a publish (its
    own isolated environment when it declares dependencies, else the server's Python)."""
    if environment in (None, "", "auto"):
        return None
    if environment == environments.R:
        raise errors.BadRequest(
            "Runs start R with their command ('-- Rscript train.R'); --environment chooses a "
            "Python environment: server, isolated or a named one."
        )
    validate_environment(environment)
    named = (
        services.repo.get_environment(environment)
        if environment not in environments.RESERVED
        else None
    )
    if named is not None and named.kind == environments.R:
        raise errors.BadRequest(
            f"The environment '{environment}' is an R library, which R versions use; "
            "--environment chooses a Python environment for a run: server, isolated or a "
            "named one."
        )
    if environment not in environments.RESERVED and named is None:
        raise errors.EnvironmentNotFound(
            f"There is no environment '{environment}'. 'modelhost envs list' shows them, and "
            f"'modelhost envs create {environment} --requirements FILE' makes one."
        )
    return environment


def check_project_environment(environment: str | None, tree: Path) -> None:
    """``isolated`` needs dependencies to isolate (checked once the project is here)."""
    if environment == environments.ISOLATED and environments.requirements_of(tree) is None:
        raise errors.BadRequest(
            "--environment isolated needs the project's dependencies: add a requirements.txt "
            "(or [project] dependencies in pyproject.toml), or leave --environment out."
        )


def check_run(
    services: Services,
    user: User,
    command: list[str],
    model: str | None,
    file: str | None,
    function: str | None,
    timeout_seconds: float | None,
    environment: str | None = None,
) -> tuple[Model | None, str | None, str | None, float]:
    """Everything about a run that can be checked before its project is uploaded."""
    validate_command(command)
    run_environment(services, environment)
    timeout = validate_timeout(services, timeout_seconds)
    target, file, function = publish_target(services, user, model, file, function, action=RUN)
    return target, file, function, timeout


def create_run(
    services: Services,
    user: User,
    *,
    archive: BinaryIO,
    command: list[str],
    model: str | None = None,
    file: str | None = None,
    function: str | None = None,
    timeout_seconds: float | None = None,
    description: str = "",
    environment: str | None = None,
) -> Run:
    """Store the project and queue the run; the run loop starts it within a tick."""
    target, file, function, timeout = check_run(
        services, user, command, model, file, function, timeout_seconds, environment
    )
    environment = run_environment(services, environment)
    bundle, tree = store_project(services, archive, environment)
    try:
        with audited(services, user, RUN, model=target) as audit:
            run = services.repo.create_run(
                owner_id=user.id,
                model_id=target.id if target else None,
                file=file,
                function=function,
                command=json.dumps(command),
                bundle_sha256=bundle.sha256,
                timeout_seconds=timeout,
                description=description,
                environment=environment,
            )
            audit.detail["run_id"] = run.id
            destination = workdir(services, run.id)
            destination.parent.mkdir(parents=True, exist_ok=True)
            tree.rename(destination)  # before the commit: a queued run always has its copy
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    services.wake_jobs()
    return run


def get_run(
    services: Services, user: User, run_id: str, action: str, *, audit_as: Action | None = None
) -> Run:
    """The run, if ``user`` may do ``action`` on it; 404 for runs they may not see."""
    run = services.repo.get_run(run_id)
    detail = {"run_id": run_id}
    if run is None or not may(
        services, user, run.owner_id, run.model_id, action, audit_as=audit_as, detail=detail
    ):
        raise errors.RunNotFound(
            f"There is no run '{run_id}'. 'modelhost runs list' shows the runs you may see."
        )
    return run


def may(
    services: Services,
    user: User,
    owner_id: str,
    model_id: str | None,
    action: str,
    *,
    audit_as: Action | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Whether ``user`` sees a run or schedule; raises Forbidden if they see it but may not
    do ``action`` (recorded under ``audit_as`` when given, like a refused model action).
    Admins and the creator may do everything; on a model, the role decides."""
    if user.is_admin or owner_id == user.id:
        return True
    model = services.repo.find_model(model_id) if model_id else None
    if model is None:
        return False
    role = role_of(user, model, access_control.roles_on(services, model))
    if not can_see(user, model, role):
        return False
    try:
        ensure_permission(user, action, model, role)
    except errors.Forbidden as exc:
        if audit_as:
            denied = {**(detail or {}), "error": exc.message, "needs": action}
            record(services, user, audit_as, model=model, outcome="denied", detail=denied)
        raise
    return True


def creator_refusal(
    services: Services, owner_id: str, model_id: str | None, action: str
) -> str | None:
    """Why the creator of a run or schedule may no longer start it, or None if they may.

    Schedules act as their creator, checked at every tick and again when each run starts:
    a creator who was disabled, lost their role on the model (``action``: ``run`` or
    ``schedule``) or, for a run with no model, the right to start those, runs nothing more.
    """
    owner = services.repo.get_user(owner_id)
    if owner is None or owner.disabled_at is not None:
        name = owner.username if owner is not None else owner_id
        return f"its creator {name} is disabled"
    if model_id is None:
        try:
            ensure_server_permission(owner, "run-unattached", services.settings)
        except errors.Forbidden:
            return (
                f"its creator {owner.username} may no longer start runs that publish to no "
                "model (setting code_runners)"
            )
        return None
    model = services.repo.find_model(model_id)
    if model is None:
        return "its model was deleted"
    role = role_of(owner, model, access_control.roles_on(services, model))
    try:
        ensure_permission(owner, action, model, role)
    except (errors.Forbidden, errors.ModelNotFound):
        return f"its creator {owner.username} may no longer {action} on '{model.name}'"
    return None


def may_see(services: Services, user: User, owner_id: str, model_id: str | None) -> bool:
    return may(services, user, owner_id, model_id, "view")


#: the most runs one list answers
MAX_LIST_LIMIT = 1000


def list_runs(
    services: Services,
    user: User,
    *,
    model: str | None = None,
    schedule_id: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise errors.BadRequest(
            f"limit is how many runs to list, 1 to {MAX_LIST_LIMIT}; {limit} is out of range."
        )
    model_id = authorize(services, user, model, "view").id if model else None
    if schedule_id is not None:
        schedule = services.repo.get_schedule(schedule_id)
        if schedule is None or not may_see(services, user, schedule.owner_id, schedule.model_id):
            raise errors.ScheduleNotFound(
                f"There is no schedule '{schedule_id}'. 'modelhost schedules list' shows them."
            )
    found = services.repo.list_runs(model_id=model_id, schedule_id=schedule_id, limit=5000)
    seen: dict[tuple[str, str | None], bool] = {}  # one check per creator and model

    def visible_run(run: Run) -> bool:
        key = (run.owner_id, run.model_id)
        if key not in seen:
            seen[key] = may_see(services, user, run.owner_id, run.model_id)
        return seen[key]

    visible = [r for r in found if visible_run(r)]
    return [run_view(services, r) for r in visible[:limit]]


def cancel_run(services: Services, user: User, run_id: str) -> Run:
    """Cancel a queued run at once, or ask the run loop to kill a running one."""
    run = get_run(services, user, run_id, "run", audit_as=RUN_CANCEL)
    model = services.repo.find_model(run.model_id) if run.model_id else None
    with audited(services, user, RUN_CANCEL, model=model, detail={"run_id": run.id}):
        if loading(run):
            name = model.name if model else "MODEL"
            raise errors.Conflict(
                f"Run {run.id} has finished its command and published version "
                f"{run.published_version}, which is loading; nothing to cancel. The run ends "
                f"once the version has loaded or failed to ('modelhost versions {name}')."
            )
        if not (
            services.repo.cancel_queued(run.id, "Cancelled before it started.")
            or services.repo.request_cancel(run.id)
        ):
            current = services.repo.get_run(run.id) or run
            raise errors.Conflict(
                f"Run {run.id} has already finished ({current.status}); nothing to cancel."
            )
    services.wake_jobs()
    return services.repo.get_run(run.id) or run


def read_log(services: Services, run: Run, offset: int = 0) -> dict[str, Any]:
    """The run's log from byte ``offset``: ``text``, the next ``offset``, and the run's state."""
    if offset < 0:
        raise errors.BadRequest(
            f"offset is a byte offset, 0 or more; got {offset}. Start at 0 and pass back the "
            "offset each answer gives."
        )
    current = services.repo.get_run(run.id) or run  # first: the log is complete once finished
    path = log_path(services, run.id)
    data = b""
    # Past the end (or before the log exists) reads nothing and answers the end, so a
    # follower can go on from there; a seek that far would fail.
    offset = min(offset, path.stat().st_size if path.exists() else 0)
    if path.exists():
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(LOG_CHUNK_BYTES)
        if len(data) == LOG_CHUNK_BYTES and b"\n" in data:
            data = data[: data.rindex(b"\n") + 1]  # whole lines, whole characters
    return {
        "text": data.decode("utf-8", errors="replace"),
        "offset": offset + len(data),
        "status": current.status,
        "finished": current.status not in ("queued", "running") and not data,
    }


# --------------------------------------------------------------------------- views


def loading(run: Run) -> bool:
    """Whether the run has published a version and waits for it to load (or fail to)."""
    return run.status == "running" and run.published_version is not None


#: what a run that waits for its version says after what it did
LOADING = ", which is loading; the run ends once it has loaded or failed to."


def _published(run: Run) -> str:
    return (
        f"Exited with status 0; published version {run.published_version} "
        f"({run.file}:{run.function})"
    )


def run_view(services: Services, run: Run) -> dict[str, Any]:
    model = services.repo.find_model(run.model_id) if run.model_id else None
    owner = services.repo.get_user(run.owner_id)
    duration = None
    if run.started_at and run.finished_at:
        duration = round((run.finished_at - run.started_at).total_seconds(), 3)
    return {
        "id": run.id,
        "status": run.status,
        "message": _published(run) + LOADING if loading(run) else run.message,
        "exit_code": 0 if loading(run) else run.exit_code,
        "pid": run.pid,
        "command": json.loads(run.command),
        "model": model.name if model else None,
        "model_id": run.model_id,
        "entry_point": f"{run.file}:{run.function}" if run.file else None,
        "schedule_id": run.schedule_id,
        "owner": owner.username if owner else None,
        "description": run.description,
        "timeout_seconds": run.timeout_seconds,
        "environment": run.environment or "auto",
        "cancel_requested": run.cancel_requested,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_seconds": duration,
        "published_version": run.published_version,
        "bundle_sha256": run.bundle_sha256,
    }


# --------------------------------------------------------------------------- publish after run


def publish_result(services: Services, run: Run) -> Version:
    """Publish the run's directory as it stands now as the next version of its model.

    The same publish as any other (same checks, same lifecycle: a version that fails to load
    never takes traffic), by the run's creator, who must still be allowed to publish. The
    version is recorded on the run in the publish's own transaction, so a run can publish at
    most once, whatever happens to the server afterwards. The run then waits for the version
    (:func:`published_outcome`).
    """
    assert run.model_id is not None
    assert run.file
    assert run.function
    owner = services.repo.get_user(run.owner_id)
    if owner is None or owner.disabled_at is not None:
        raise errors.Forbidden("The run's creator no longer has an active account.")
    model = services.repo.find_model(run.model_id)
    if model is None:
        raise errors.ModelNotFound("The model this run publishes to has been deleted.")
    request = PublishRequest(
        model.id, run.file, run.function, description=f"Published by run {run.id}"
    )
    check_publish(services, owner, request)
    tree = workdir(services, run.id)
    files = collect_files(tree)
    detail = {"run_id": run.id}
    if run.schedule_id:
        detail["schedule_id"] = run.schedule_id

    def record_on_run(version: Version) -> None:
        if not services.repo.record_publish(run.id, version.id, version.number):
            raise errors.Conflict(
                f"Run {run.id} has already published a version, or was recorded as interrupted "
                "(the server that leads now found it running when it took over)."
            )

    limit = services.settings.max_bundle_bytes
    with pack_project(tree, files, max_bytes=limit) as archive:
        _model, version = publish_version(
            services, owner, request, archive, detail=detail, then=record_on_run
        )
    return version


def published_outcome(services: Services, run: Run) -> tuple[str, str] | None:
    """The outcome of a run that published, from its version: ``succeeded`` once the version
    has loaded, ``failed`` (with the version's own failure) if it failed to build or load, or
    None while it is still building.

    A run is only as good as what it produced: a schedule whose new version cannot load must
    not look green. What happens to the version afterwards (a rollback after it took a
    route, say) is the version's story, not the run's.
    """
    assert run.published_version_id is not None
    version = services.repo.get_version_by_id(run.published_version_id)
    published = _published(run)
    if version is None:  # its model was deleted meanwhile
        return "failed", f"{published}, which was deleted before it loaded."
    if version.status == "building":
        return None
    if version.status != "failed":
        return "succeeded", f"{published}, which has loaded."
    failure = version.failure
    text = failure.message if failure else version.build_log.split("Failed:\n", 1)[-1]
    lines = text.strip().splitlines()
    reason = lines[0].rstrip() if lines else "see its build log"
    if not reason.endswith((".", "!", "?")):
        reason += "."
    kind = failure.kind if failure else "load"
    what = {"environment": "failed to build", "load": "failed to load", "start": "failed to load"}
    model = services.repo.find_model(version.model_id)
    if model is not None:
        reason += (
            f" 'modelhost versions {model.name} --number {version.number}' shows its build log."
        )
    return "failed", f"{published}, which {what.get(kind, 'failed')}: {reason}"
